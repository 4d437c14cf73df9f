"""Native libraries that Python packages carry, under herald-python's library
directory policy: a package pip installed into a virtualenv is allowed (its
Python code is trusted already); a library outside every allowed directory is
refused when its registration is made, and `wait_pending()` says so, naming the
library; `--library-path` allows a directory on every node.

Each test runs jobs of its own (herald-python -n 2), so it runs once, in the
suite's one-node job."""

import base64
import hashlib
import os
import shutil
import subprocess
import textwrap
import zipfile

import pytest

import herald
from hp_suite import run_job

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATIVETASKS_DIR = os.path.join(REPO_DIR, "examples", "python", "nativetasks")

pytestmark = pytest.mark.skipif(
    herald.num_nodes() != 1, reason="starts jobs of its own; run once, in the one-node suite"
)

# Variables of the suite's own job that would allow or redirect the library.
UNSET = ("HERALD_LIBRARY_PATH", "NATIVETASKS_LIBRARY", "VIRTUAL_ENV")

SCRIPT = """
import herald
import nativetasks  # plain import: ctypes loads the library, its constructor registers
try:
    waited = herald.wait_pending()
except herald.HeraldError as error:
    print("wait_pending raised:", error)
    raise SystemExit(3)
nodes = range(herald.num_nodes())
squares = [nativetasks.square(node, node + 3).result() for node in nodes]
where = [nativetasks.where(node).result() for node in nodes]
print(f"squares {squares} where {where} waited {waited}")
print("loaded from", nativetasks.library._name)
"""


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    """The nativetasks package with its library beside its __init__.py."""
    root = tmp_path_factory.mktemp("package")
    package = root / "nativetasks"
    package.mkdir()
    shutil.copy(os.path.join(NATIVETASKS_DIR, "nativetasks", "__init__.py"), package)
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-I", os.path.join(REPO_DIR, "include"),
         os.path.join(NATIVETASKS_DIR, "nativetasks.c"), "-o", str(package / "libnativetasks.so")],
        check=True,
    )
    (root / "script.py").write_text(SCRIPT)
    return root


@pytest.fixture(scope="module")
def virtualenv(package_dir, tmp_path_factory):
    """A virtualenv with nativetasks pip-installed from a local wheel (no network)."""
    wheels = tmp_path_factory.mktemp("wheels")
    wheel = wheels / "nativetasks-1.0-py3-none-any.whl"
    _write_wheel(wheel, package_dir / "nativetasks")
    venv = tmp_path_factory.mktemp("venv")
    python = os.environ.get("PYTHON") or shutil.which("python3")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
         "--disable-pip-version-check", "--find-links", str(wheels), "nativetasks"],
        check=True,
    )
    return venv


def test_a_pip_installed_native_library_runs_on_every_node(virtualenv, tmp_path):
    # Away from the package's source, so the installed copy is the one imported.
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    job = run_job(["-n", "2", str(script)], env={"VIRTUAL_ENV": str(virtualenv)},
                  cwd="/", unset=UNSET)
    output = job.stdout + job.stderr
    assert job.returncode == 0, output
    assert "[0] squares [9, 16] where [0, 1] waited 1" in job.stdout, output
    site_packages = os.path.join(str(virtualenv), "lib")
    assert f"[0] loaded from {site_packages}" in job.stdout, output


def test_a_library_outside_the_allowed_directories_fails_wait_pending(package_dir):
    script = str(package_dir / "script.py")
    library = os.path.realpath(package_dir / "nativetasks" / "libnativetasks.so")
    job = run_job(["-n", "2", script], cwd="/", unset=UNSET)
    output = job.stdout + job.stderr
    assert job.returncode != 0, output
    assert (f"wait_pending raised: library {library} is outside the allowed directories"
            in job.stdout), output
    assert "to HERALD_LIBRARY_PATH on every node" in job.stdout
    assert "--library-path to herald node or herald-python" in job.stdout


def test_library_path_allows_a_directory_on_every_node(package_dir):
    script = str(package_dir / "script.py")
    job = run_job(["-n", "2", "--library-path", str(package_dir), script], cwd="/", unset=UNSET)
    output = job.stdout + job.stderr
    assert job.returncode == 0, output
    assert "[0] squares [9, 16] where [0, 1] waited 1" in job.stdout, output


def _write_wheel(wheel, package):
    """A wheel of one package directory, written by hand (no build backend)."""
    dist_info = "nativetasks-1.0.dist-info"
    files = {
        f"nativetasks/{name}": (package / name).read_bytes() for name in os.listdir(package)
    }
    files[f"{dist_info}/METADATA"] = b"Metadata-Version: 2.1\nName: nativetasks\nVersion: 1.0\n"
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: herald-tests\nRoot-Is-Purelib: false\nTag: py3-none-any\n"
    )
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
