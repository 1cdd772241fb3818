"""Benchmarks of MTSAM-Tune against the reference design (see BENCHMARKS.md)."""


def emit(doc: dict, output: str | None) -> None:
    """Print a benchmark's JSON document and write it to ``output`` (none when empty)."""
    import json
    from pathlib import Path

    text = json.dumps(doc, indent=2)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")
