"""`annotune report`: a self-contained HTML report (and Markdown) rendered from a real output folder — a
comparison with a tf-idf baseline, a tiny random Llama and a predictions file with unparseable answers, plus
a learning curve of the tiny model — and checked in headless Chromium: screenshot taken, key elements
present, no broken images, no console errors, no resource fetched from outside the file."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotune.cli import app
from annotune.report import load_report_data, methods_paragraph, write_report
from annotune.report.format import ci_text, number, size_label
from annotune.report.render import environment, render_html
from annotune.report.sections import build_sections

from conftest import TOPIC_LABELS as LABELS, TOPIC_WORDS as WORDS, TOPICS_CODEBOOK as CODEBOOK

UNPARSEABLE = "It is about money, I think"
CURVE = """\
[curve]
sizes = [6, 12]
seeds = [1, 2]
answer = "constrained"
"""

def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def write_folder(root: Path, model_dir: Path) -> Path:
    records = []
    for i in range(60):
        label = LABELS[i % 3]
        records.append({"id": f"doc{i:03d}", "text": f"Story {i}: {WORDS[label]} news {i % 7}", "label": label})
    with open(root / "data.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(records)
    (root / "codebook.toml").write_text(CODEBOOK, encoding="utf-8")
    with open(root / "gpt.jsonl", "w", encoding="utf-8") as fh:  # right, wrong and unparseable answers
        for i, rec in enumerate(records):
            answer = UNPARSEABLE if i % 5 == 0 else (rec["label"] if i % 4 else LABELS[(i + 1) % 3])
            fh.write(json.dumps({"id": rec["id"], "label": answer}) + "\n")
    (root / "config.toml").write_text(f"""\
name = "report-demo"
seed = 7
bootstrap = 200
codebook = "codebook.toml"

[data]
path = "data.csv"

[split]
test_size = 21

[model]
name = "{model_dir}"
dtype = "fp32"
batch_size = 4
max_new_tokens = 6

[finetune]
epochs = 1
batch_size = 4
r = 4
alpha = 8
max_length = 128
save_steps = 50
max_dev = 0
dev_size = 0

{CURVE}
[[systems]]
name = "tf-idf"
type = "tfidf"

[[systems]]
name = "tiny zero-shot constrained"
answer = "constrained"

[[systems]]
name = "GPT-4 <file> | $2.50"
type = "predictions"
path = "gpt.jsonl"
cost_per_1k_docs = 2.5
""", encoding="utf-8")
    return root / "config.toml"


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory, tiny_model_dir) -> Path:
    """`annotune curve` on the config: references run as `compare` runs them, the curve, then the report."""
    root = tmp_path_factory.mktemp("report")
    config = write_folder(root, tiny_model_dir)
    out = root / "out"
    invoke("curve", config, "-o", out, "-q")
    return out


# ---------------------------------------------------------------------------- files
def test_report_files_are_written_and_self_contained(report_folder):
    page = (report_folder / "report.html").read_text(encoding="utf-8")
    md = (report_folder / "report.md").read_text(encoding="utf-8")
    figures = sorted(p.name for p in (report_folder / "figures").glob("*.png"))
    assert "learning-curve.png" in figures and "per-class-f1.png" in figures and "throughput.png" in figures
    assert sum(name.startswith("confusion-") for name in figures) == 3
    # self-contained: every image is an embedded PNG, nothing is fetched, nothing runs
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(srcs) == len(figures)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in page.lower() and not re.search(r'(src|href)="(https?:)?//', page)
    # Markdown: the same figures as files
    for name in figures:
        assert f"(figures/{name})" in md
    # user strings are escaped, never markup
    assert "GPT-4 &lt;file&gt; | $2.50" in page and "GPT-4 <file>" not in page
    assert "GPT-4 <file> \\| $2.50" in md


def test_report_sections_tables_and_invalid_column(report_folder):
    results = load_report_data(report_folder)
    page = (report_folder / "report.html").read_text(encoding="utf-8")
    for section in ("summary", "comparison", "confusion", "per-class", "learning-curve", "cost", "manifest",
                    "methods"):
        assert f'<section id="{section}">' in page
    gpt = next(s for s in results["systems"] if s["name"].startswith("GPT-4"))
    conf = gpt["metrics"]["confusion"]
    assert conf["columns"][-1] == "INVALID" and sum(r[-1] for r in conf["matrix"]) == gpt["metrics"]["n_invalid"] > 0
    assert 'id="fig-confusion-gpt-4-file-2-50"' in page
    # the comparison table as `compare` prints it, the curve's sizes, the matches
    assert "Macro-F1 [95% CI]" in page and "Acc (valid)" in page
    curve = results["curve"]
    rows = curve["answers"]["constrained"]["rows"]
    assert [r["n_train"] for r in rows] == [6, 12] and all(len(r["values"]) == 2 for r in rows)
    assert "Smallest size: mean ≥ reference" in page and "Smallest size: CI lower bound ≥ reference" in page
    # cost: the predictions file's cost; manifest: libraries, hardware, test ids, the config file as run
    assert "0.0525" in page  # 2.5 USD per 1000 documents × 21
    text = html.unescape(page)
    for item in (results["environment"]["libraries"]["torch"], results["data"]["test_ids_sha256"],
                 results["environment"]["hardware"]["cpu"]):
        assert str(item) in text
    # the config file's text as run, stored by compare in results.json
    assert results["config_text"] and "cost_per_1k_docs = 2.5" in text
    assert methods_paragraph(results) in text


def test_methods_paragraph_states_models_prompts_sizes_seeds_and_metrics(report_folder):
    results = load_report_data(report_folder)
    text = methods_paragraph(results)
    tiny = next(s for s in results["systems"] if s["name"] == "tiny zero-shot constrained")
    assert f"{Path(tiny['spec']['model']).name} prompted zero-shot" in text  # the model from the stored spec
    for part in ("single-label codebook of 3 labels (business, sport, tech)", "held-out test set of 21 documents",
                 "prompted zero-shot with constrained answering", "TF-IDF", "GPT-4 <file> | $2.50",
                 "LoRA (rank 4, α = 8", "6 and 12 training documents", "2 seeds per size (seeds 1, 2",
                 "macro-F1", "200 resamples", "INVALID", "PyTorch", "Transformers"):
        assert part in text, part


def test_report_command_writes_elsewhere_and_rejects_a_folder_without_results(report_folder, tmp_path):
    result = invoke("report", report_folder, "-o", tmp_path / "copy")
    assert (tmp_path / "copy" / "report.html").exists()
    assert (tmp_path / "copy" / "figures" / "learning-curve.png").exists()
    assert "report:" in result.stdout
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "copy" / "figures")])
    assert bad.exit_code == 2 and "no results.json" in bad.stderr and "Traceback" not in bad.stderr


def test_compare_writes_the_report_without_a_curve(tmp_path, tiny_model_dir):
    config = write_folder(tmp_path, tiny_model_dir)
    config.write_text(config.read_text().replace(CURVE, "").replace(
        '[[systems]]\nname = "tiny zero-shot constrained"\nanswer = "constrained"\n', ""), encoding="utf-8")
    result = invoke("compare", config, "-o", tmp_path / "out", "-q")
    assert f"report: {tmp_path / 'out' / 'report.html'}" in result.stdout
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "No learning curve in this folder" in page and page.count("<img ") == 4  # 2 confusion, per-class, cost


def _results_copy(report_folder: Path, folder: Path, **changes) -> Path:
    """The report folder's results.json (with the curve) rewritten into ``folder`` with ``changes``."""
    results = json.loads((report_folder / "results.json").read_text(encoding="utf-8"))
    results.update(changes)
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    shutil.copytree(report_folder / "curve", folder / "curve")
    return folder


def test_report_takes_config_text_and_models_from_results_not_from_the_config_file(report_folder, tmp_path):
    results = load_report_data(report_folder)
    tiny = next(s for s in results["systems"] if s["name"] == "tiny zero-shot constrained")
    systems = [{**s, "spec": {**s["spec"], "model": "org/stored-model"}} if s is tiny else s
               for s in results["systems"]]
    stored = _results_copy(report_folder, tmp_path / "stored", systems=systems, config="/nowhere/config.toml",
                           config_text='name = "as <run>"\n')
    page = html.unescape((write_report(stored)["html"]).read_text(encoding="utf-8"))
    assert "Config file (as run)" in page and 'name = "as <run>"' in page
    assert "org/stored-model prompted zero-shot with constrained answering" in page
    # an older results.json: no config text (the file on disk is not read), the embedded model's name
    old_systems = [{**s, "spec": {k: v for k, v in s["spec"].items() if k != "model"}} for s in results["systems"]]
    old = _results_copy(report_folder, tmp_path / "old", systems=old_systems, config_text=None)
    assert Path(results["config"]).is_file()
    page = html.unescape((write_report(old)["html"]).read_text(encoding="utf-8"))
    assert "Config file" not in page and "cost_per_1k_docs" not in page.split("Reproducibility manifest")[1]
    assert "SmolLM2-135M-Instruct prompted zero-shot" in page


def test_the_look_comes_from_templates(report_folder, tmp_path):
    """A copy of the shipped templates with another style changes the page without code."""
    from annotune.report.render import TEMPLATES

    shutil.copytree(TEMPLATES, tmp_path / "look")
    template = tmp_path / "look" / "report.html"
    template.write_text(template.read_text(encoding="utf-8").replace("<style>", "<style>h2{color:#c0ffee}"),
                        encoding="utf-8")
    results = load_report_data(report_folder)
    page = render_html(results, build_sections(results), templates=str(tmp_path / "look"))
    assert "h2{color:#c0ffee}" in page and '<section id="methods">' in page
    assert environment().autoescape("report.html") and not environment().autoescape("report.md")


def test_formatting_helpers():
    assert ci_text(0.81234, [0.7, 0.9]) == "0.812 [0.700, 0.900]"
    assert ci_text(0.5, None) == "0.500" and ci_text(None, [0.1, 0.2]) == "–"
    assert size_label("all", 4321) == "all (4,321)" and size_label(1000, 1000) == "1,000"
    assert number(1234.5) == "1,234" and number(12.34) == "12.3" and number(None) == "–" and number(7) == "7"


def test_report_does_not_name_the_task_kinds():
    """Kind-specific wording comes from the task kind classes (`annotune.tasks`): no module of the report
    names a kind or branches on one."""
    from annotune import report

    folder = Path(report.__file__).parent
    assert not (folder / "kinds.py").exists()
    for path in folder.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"[\"'](single|multi|dimensions)[\"']", source), path
        assert not re.search(r"\bkind\b\s*[!=]=|\.kind\s*(?:in|[!=]=)", source), path


def test_report_wording_comes_from_the_task_kinds():
    from annotune.report.format import PRIMARY_NAMES, primary_key, primary_name, results_task
    from annotune.tasks import get_task, task_names

    for kind in task_names():
        task = get_task(kind)
        assert results_task({"task": {"task": {"kind": kind}}}) is task
        assert primary_key({"task": {"task": {"kind": kind}}, "systems": [{"metrics": {}}]}) == task.primary_metric
        assert PRIMARY_NAMES[task.primary_metric] == primary_name(task.primary_metric) == task.primary_name
    assert PRIMARY_NAMES == {"macro_f1": "macro-F1", "micro_f1": "micro-F1", "intensity_micro_f1": "intensity micro-F1",
                             "rouge_l": "ROUGE-L"}
    assert primary_name("accD") == "accD"


# ---------------------------------------------------------------------------- other task kinds
MULTI = """\
[task]
name = "topics-multi"
kind = "multi"
max_labels = 2

[[labels]]
name = "business"
definition = "companies"

[[labels]]
name = "sport"
definition = "matches"
"""

DIMENSIONS = """\
[task]
name = "wellbeing"
kind = "dimensions"
scale = ["low", "medium", "high"]
label_field = "label"

[[labels]]
name = "happiness"
definition = "joy"

[[labels]]
name = "gratitude"
definition = "thanks"
"""


@pytest.mark.parametrize("kind", ["multi", "dimensions"])
def test_multi_label_and_dimension_reports(tmp_path, kind):
    records, answers = [], []
    for i in range(40):
        if kind == "multi":
            gold = ["business", "sport"][: 1 + i % 2] if i % 3 else ["sport"]
            records.append({"id": f"d{i}", "text": f"text {i} {' '.join(gold)}", "label": gold})
            answers.append({"id": f"d{i}", "label": "nonsense" if i % 6 == 0 else json.dumps(gold[:1])})
        else:
            gold = {"happiness": ["low", "medium", "high"][i % 3]} | ({"gratitude": "high"} if i % 2 else {})
            records.append({"id": f"d{i}", "text": f"text {i}", "label": gold})
            answers.append({"id": f"d{i}", "label": "???" if i % 7 == 0 else json.dumps({"happiness": "medium"})})
    with open(tmp_path / "data.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    with open(tmp_path / "pred.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(a) + "\n" for a in answers)
    (tmp_path / "codebook.toml").write_text(MULTI if kind == "multi" else DIMENSIONS, encoding="utf-8")
    (tmp_path / "config.toml").write_text(
        'name = "kinds"\nseed = 3\nbootstrap = 50\ncodebook = "codebook.toml"\n[data]\npath = "data.jsonl"\n'
        '[split]\ntest_size = 15\n[[systems]]\nname = "big model"\ntype = "predictions"\npath = "pred.jsonl"\n',
        encoding="utf-8")
    invoke("compare", tmp_path / "config.toml", "-o", tmp_path / "out", "-q")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Confusion matrices apply to single-label tasks" in page
    assert page.count("<img ") == 1  # per-label F1 (a predictions file has no throughput)
    text = methods_paragraph(load_report_data(tmp_path / "out"))
    if kind == "multi":
        assert "multi-label codebook of 2 labels" in text and "micro-F1" in text
    else:
        assert "each coded on the scale low, medium, high" in text and "intensity micro-F1" in text


# ---------------------------------------------------------------------------- headless Chromium
class Chromium:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (JSON messages separated
    by NUL bytes on file descriptors 3 and 4): no websocket library, no port."""

    def __init__(self, exe: str, profile: Path):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()

        def child_fds():  # the browser reads commands on fd 3 and writes answers on fd 4
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=child_fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        os.close(to_r)
        os.close(from_w)
        self.w, self.r = to_w, from_r
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _recv(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no message from the browser")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise EOFError(self.proc.stderr.read().decode(errors="replace")[-2000:])
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        while True:
            for e in self.events:
                if e.get("method") == event:
                    return e
            self.events.append(self._recv(deadline))

    def drain(self, seconds: float) -> None:
        deadline = time.time() + seconds
        try:
            while True:
                self.events.append(self._recv(deadline))
        except TimeoutError:
            pass

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        os.close(self.w)
        os.close(self.r)


def chromium_or_skip() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs the Debian package `chromium`")
        pytest.skip("headless browser check needs chromium (apt-get install chromium)")
    return exe


def test_report_renders_in_headless_chromium(report_folder, tmp_path):
    from PIL import Image

    browser = Chromium(chromium_or_skip(), tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            browser.send(domain, session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 2000, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": (report_folder / "report.html").resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        check = """JSON.stringify({
            images: [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth,
                                                    alt: i.alt})),
            sections: [...document.querySelectorAll('section')].map(s => s.id),
            comparisonRows: document.querySelectorAll('#comparison tbody tr').length,
            confusion: document.querySelectorAll('#confusion img').length,
            curve: document.querySelectorAll('#learning-curve img').length,
            curveTables: document.querySelectorAll('#learning-curve table').length,
            methods: (document.querySelector('#methods blockquote') || {}).textContent || '',
            title: document.title,
            resources: performance.getEntriesByType('resource').map(r => r.name),
            width: document.documentElement.scrollWidth,
        })"""
        state = json.loads(browser.send("Runtime.evaluate", {"expression": check, "returnByValue": True},
                                        session=session)["result"]["value"])
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
        browser.drain(0.5)  # late console messages
    finally:
        browser.close()

    png = tmp_path / "report.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 2000)
    assert len(image.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 50, "the screenshot is blank"

    figures = len(list((report_folder / "figures").glob("*.png")))
    assert len(state["images"]) == figures and all(i["ok"] for i in state["images"]), state["images"]
    assert state["sections"] == ["summary", "comparison", "confusion", "per-class", "learning-curve", "cost",
                                 "manifest", "methods"]
    assert state["comparisonRows"] == 3 and state["confusion"] == 3 and state["curve"] == 1
    # per line (fine-tuned, and the trained reference run at every size): a per-size and a matches table
    assert state["curveTables"] == 4
    assert "seeded stratified subsamples" in state["methods"]
    assert state["title"] == "annotune report — report-demo"
    assert all(r.startswith("data:") for r in state["resources"]), state["resources"]  # nothing from outside
    assert state["width"] <= 1280  # no horizontal scrolling of the page

    errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert not errors, errors
