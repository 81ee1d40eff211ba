"""Exporting fine-tuned runs for deployment: merged weights, GGUF files (llama.cpp, Ollama) and an Ollama
Modelfile (`annotune.export.gguf`). ``converter/`` is llama.cpp's own HF → GGUF converter, vendored
unchanged with its MIT licence (see its README.md)."""
