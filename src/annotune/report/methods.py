"""The methods paragraph: what was compared, how, on what data and machine — from results.json (and the
learning curve under ``results["curve"]``), ready to paste into a paper."""

from __future__ import annotations

from annotune.report.format import (ci_text, curve_matches, curve_trained, hardware_words, join_words, line_label,
                                    plural, primary_key, primary_name, results_task)


def _lora_words(params: dict) -> str:
    """The fine-tuning recipe in words: the stored settings over `FineTuneConfig`'s defaults."""
    from annotune.finetune.trainer import FineTuneConfig

    hp = {**{f: getattr(FineTuneConfig(), f) for f in ("r", "alpha", "dropout", "learning_rate", "epochs",
                                                        "batch_size", "max_length", "target_modules")},
          **{k: v for k, v in (params or {}).items()}}
    epochs = hp["epochs"]
    epochs = int(epochs) if float(epochs).is_integer() else epochs
    target = "all linear layers" if hp["target_modules"] == "all-linear" else f"modules {hp['target_modules']}"
    return (f"LoRA (rank {hp['r']}, α = {hp['alpha']}, dropout {hp['dropout']}, on {target}), learning rate "
            f"{hp['learning_rate']:g}, {epochs} {plural(epochs, 'epoch')}, batch size {hp['batch_size']}, "
            f"loss on the answer tokens only")


def _system_words(s: dict) -> str:
    """The system's own wording (`System.describe`), by its registered type."""
    from annotune.systems import system_types

    cls = system_types().get(s.get("type") or s.get("spec", {}).get("type", "prompt"))
    return cls.describe(s) if cls is not None else f"“{s['name']}”"


def methods_paragraph(results: dict) -> str:
    """A paragraph for a paper's methods section, from results.json (and the curve under ``"curve"``)."""
    task = results["task"]["task"]
    labels = [lab["name"] for lab in results["task"]["labels"]]
    task_kind = results_task(results)
    data = results.get("data", {})
    pname = primary_name(primary_key(results))
    libs = results.get("environment", {}).get("libraries", {})
    hw = results.get("environment", {}).get("hardware", {})
    curve = results.get("curve")
    out = []
    shown = ", ".join(labels[:8]) + (f" and {len(labels) - 8} more" if len(labels) > 8 else "")
    scale = (f", each coded on the scale {', '.join(task['scale'])}" if task.get("scale")
             else "")
    out.append(f"We coded {data.get('documents', 0):,} documents (“{task['name']}”) with a {task_kind.description} "
               f"codebook of {len(labels)} {task_kind.items_word} ({shown}{scale}).")
    out.append(f"All systems were evaluated on the same held-out test set of {data.get('test', 0):,} documents; the "
               f"other {data.get('train', 0):,} documents formed the training pool (seed {results.get('seed')}).")
    systems = results.get("systems", [])
    if systems:
        out.append(f"We compared {join_words([_system_words(s) for s in systems])}.")
    prompts = [s for s in systems if s.get("spec", {}).get("type", "prompt") in ("prompt", "api")]
    if prompts:
        few = [s for s in prompts if int(s["spec"].get("shots", 0)) > 0]
        text = ("Prompts gave the codebook's instructions and every label with its definition"
                + (", followed by labelled examples drawn from the training pool, balanced across labels"
                   if few else "")
                + ".")
        out.append(text)
    answers = {s.get("spec", {}).get("answer", "generate") for s in systems
               if s.get("spec", {}).get("type", "prompt") in ("prompt", "finetuned", "api")}
    if curve:
        answers |= set(curve["curve"]["answers"])
    if "generate" in answers:
        out.append("With free generation the model's greedy answer was parsed against the codebook (tolerating case, "
                   "punctuation and aliases); an answer that could not be parsed was kept as INVALID, never replaced "
                   "by a label.")
    if "constrained" in answers:
        out.append("With constrained answering the model's probability of every allowed answer was computed and the "
                   f"most probable one chosen{task_kind.constrained_words}.")
    tuned = [s for s in systems if s.get("spec", {}).get("type") == "finetuned"]
    if tuned or (curve and curve["curve"]["answers"]):
        params = (curve or {}).get("finetune") or (tuned[0]["spec"].get("finetune") if tuned else {})
        out.append(f"Fine-tuning used {_lora_words(params)}, with TRL {libs.get('trl') or '?'} and PEFT "
                   f"{libs.get('peft') or '?'}; fine-tuned models were trained and prompted with the label names only, "
                   "without definitions.")
    if curve:
        c = curve["curve"]
        sizes = [f"{s:,}" if s != "all" else "all" for s in c["sizes"]]
        out.append(f"To measure how much labelled data {'fine-tuning' if c['answers'] else 'training'} needs, we "
                   f"{curve_trained(curve)} on seeded stratified subsamples of {join_words(sizes)} training documents, with {len(c['seeds'])} "
                   f"{plural(len(c['seeds']), 'seed')} per size (seeds {', '.join(map(str, c['seeds']))}; a seed "
                   "sets both the subsample and the training), and report the mean over seeds with a 95 % "
                   "percentile bootstrap interval over test documents.")
        for answer, _, mt, bm, bc in curve_matches(curve):
            if not bm:
                out.append(f"{line_label(curve, answer)[0].upper()}{line_label(curve, answer)[1:]} did not reach {mt['reference']} ({pname} "
                           f"{mt['reference_value']:.3f}) at any size tried.")
                continue
            later = (f"; its 95 % interval lay entirely above the reference from {bc['n_train']:,} documents."
                     if bc else "; at no size tried did its 95 % interval lie entirely above the reference.")
            out.append(f"The smallest training set at which {line_label(curve, answer)} matched "
                       f"{mt['reference']} ({pname} {mt['reference_value']:.3f}) on average was {bm['n_train']:,} "
                       f"documents (mean {ci_text(bm['mean'], bm.get('ci'))}){later}")
    n_boot = (curve or {}).get("n_boot")
    if n_boot is None:
        n_boot = next((s["metrics"].get("n_boot") for s in systems if s.get("metrics")), None)
    ci_words = (f" with 95 % percentile bootstrap confidence intervals ({n_boot:,} resamples of the test documents)"
                if n_boot else "")
    out.append(f"We report {pname}{ci_words}, the share of valid answers, and accuracy with unparseable (INVALID) "
               "answers kept in the denominator and counted as errors.")
    env = [f"annotune {libs['annotune']}" if libs.get("annotune") else "annotune",
           f"PyTorch {libs['torch']}" if libs.get("torch") else "", f"Transformers {libs['transformers']}"
           if libs.get("transformers") else ""]
    out.append(f"Experiments ran with {join_words(env)} on {hardware_words(hw) if hw else 'an unrecorded machine'}.")
    return " ".join(out)


__all__ = ["methods_paragraph"]
