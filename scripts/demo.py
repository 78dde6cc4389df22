"""The main job until the trainer lands: execute every tutorial headless and write it as HTML to build/."""

import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import ExecutePreprocessor
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    out = ROOT / "build"
    out.mkdir(exist_ok=True)
    notebooks = sorted((ROOT / "tutorials").glob("*.ipynb"))
    if not notebooks:
        print("no tutorials found under tutorials/", file=sys.stderr)
        return 1
    for path in tqdm(notebooks, desc="tutorials", unit="nb"):
        nb = nbformat.read(path, as_version=4)
        ExecutePreprocessor(timeout=1800, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(path.parent)}})
        html, _ = HTMLExporter().from_notebook_node(nb)
        (out / f"{path.stem}.html").write_text(html)
    print(f"wrote {len(notebooks)} HTML files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
