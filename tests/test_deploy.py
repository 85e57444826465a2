"""Deployment: the Dockerfile lints clean and installs what README installs; team-server config;
paths from the URL/sidebar stay inside the configured roots."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from vitlens import VitlensError
from vitlens.store.paths import list_checkpoints, resolve_inside

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_lints_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_installs_like_readme():
    """README's two commands are what .ci/run and the Dockerfile use: one pip line everywhere."""
    readme = (ROOT / "README.md").read_text()
    docker = (ROOT / "Dockerfile").read_text()
    test_script = (ROOT / "scripts" / "test.sh").read_text()
    pattern = re.compile(r"pip install ([^&\n`]+?)\s*(?:&&|$)", re.M)  # commands, not prose in backticks
    assert set(pattern.findall(readme)) == {"-r requirements.txt -e ."}
    assert set(pattern.findall(docker)) == {"-r requirements.txt -e ."}
    assert set(pattern.findall(test_script)) == {"-r requirements.txt -e .", "-r requirements-test.txt"}
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and 'bash -euo pipefail -c "$cmd"' in ci  # CI runs README's command
    command = readme.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert command == "bash scripts/test.sh"
    for needed in ("EXPOSE 8501", "HEALTHCHECK", "/_stcore/health", "USER 1000", "WORKDIR /app", "ARG BASE",
                   "--server.headless true", "--server.address 0.0.0.0", "vitlens check-device",
                   "--server.fileWatcherType none", "VITLENS_CACHE_DIR", "VOLUME"):
        assert needed in docker, needed
    assert "nvidia/cuda" not in docker.split("ARG BASE=")[1].split("\n")[0]  # no second CUDA in the image
    for test_only in ("pytest", "playwright", "hadolint"):
        assert test_only not in (ROOT / "requirements.txt").read_text().split("# tests:")[0]


def test_team_server_config():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableXsrfProtection"] is True
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["maxUploadSize"] <= 1024
    assert "*" not in config["server"]["allowedHosts"]
    # Streamlit itself reads the file from the working folder the server starts in
    proc = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    shown = proc.stdout
    assert re.search(r"^enableXsrfProtection = true", shown, re.M)
    assert re.search(r'^showErrorDetails = "none"', shown, re.M)
    assert re.search(r"^gatherUsageStats = false", shown, re.M)


@pytest.fixture
def root(tmp_path):
    base = tmp_path / "checkpoints"
    (base / "runs" / "a").mkdir(parents=True)
    (base / "runs" / "a" / "epoch_001.safetensors").write_bytes(b"x")
    (tmp_path / "secret.pt").write_bytes(b"secret")
    (base / "escape.pt").symlink_to(tmp_path / "secret.pt")
    (base / "outdir").symlink_to(tmp_path, target_is_directory=True)
    return base


def test_paths_inside_root_resolve(root):
    assert resolve_inside(root, "runs/a/epoch_001.safetensors") == (root / "runs/a/epoch_001.safetensors").resolve()
    assert resolve_inside(root, "runs%2Fa%2Fepoch_001.safetensors").name == "epoch_001.safetensors"


@pytest.mark.parametrize("attempt", [
    "../secret.pt", "runs/../../secret.pt", "/etc/passwd", "~/secret.pt", "%2e%2e/secret.pt",
    "%2E%2E%2Fsecret.pt", "%252e%252e%252fsecret.pt", "escape.pt", "outdir/secret.pt", "..\\secret.pt".replace("\\", "/"),
    "", "a\x00b",
])
def test_traversal_refused(root, attempt):
    with pytest.raises(VitlensError) as err:
        resolve_inside(root, attempt, "checkpoint")
    assert "\n" not in str(err.value)


def test_listing_hides_symlinks_out(root):
    listed = list_checkpoints(root)
    assert listed == ["runs/a/epoch_001.safetensors"]
