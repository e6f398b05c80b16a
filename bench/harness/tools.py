"""Find nginx and wrk, installing them with apt-get when we are root and can."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


class ToolsMissingError(RuntimeError):
    """nginx or wrk is missing and could not be installed (message says what to do)."""


@dataclass(frozen=True, slots=True)
class Tools:
    nginx: str
    wrk: str


def _find() -> Tools | None:
    nginx = shutil.which("nginx") or next((p for p in NGINX_PATHS if os.access(p, os.X_OK)), None)
    wrk = shutil.which("wrk")
    return Tools(nginx=nginx, wrk=wrk) if nginx and wrk else None


def _apt(*args: str) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(
            ["apt-get", *args], env=env, capture_output=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_tools(log: bool = True) -> Tools:
    """Return the tool paths, or install them: nginx-light (or nginx) and wrk from Debian."""
    found = _find()
    if found:
        return found
    hint = "install them first: apt-get update && apt-get install -y nginx-light wrk"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ToolsMissingError(
            f"nginx and wrk are required and I cannot install them (not root or no apt-get); {hint}"
        )
    if log:
        print("installing nginx and wrk with apt-get ...", flush=True)
    installed = _apt("install", "-y", "nginx-light", "wrk")
    if not installed:
        _apt("update")
        installed = _apt("install", "-y", "nginx-light", "wrk") or _apt(
            "install", "-y", "nginx", "wrk"
        )
    found = _find()
    if not installed or not found:
        raise ToolsMissingError(f"apt-get could not install nginx and wrk (offline?); {hint}")
    return found


def tool_versions(tools: Tools) -> dict[str, str]:
    versions: dict[str, str] = {}
    for name, argv in (("nginx", [tools.nginx, "-v"]), ("wrk", [tools.wrk, "-v"])):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            first = (done.stdout + done.stderr).strip().splitlines()[0]
            versions[name] = first.split(" Copyright")[0].replace("nginx version: ", "")
        except (OSError, subprocess.TimeoutExpired, IndexError):
            versions[name] = "unknown"
    return versions
