"""A real ComfyUI server for the tests and the demo, and a small standard-library client for its queue API.

The server runs from an unmodified ComfyUI tree (COMFYUI_DIR) with `--base-directory` pointing at a scratch
folder, so the user's own tree is never touched: the scratch folder's custom_nodes/ links this pack, its
models/checkpoints/ links the checkpoints, and output/ is private to the run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_DIR_NAME = "comfyui-elemental-merge"


class ComfyError(RuntimeError):
    """A prompt that ComfyUI rejected or that failed while executing; carries the server's words."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, comfyui_dir: str, python: str, checkpoints: dict[str, str] | None = None,
                 models_dir: str | None = None, base_dir: str | None = None, port: int | None = None,
                 extra_args: tuple[str, ...] = (), cpu: bool = True):
        self.comfyui_dir = comfyui_dir
        self.python = python
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_base = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="elemental-comfy-")
        self.output_dir = os.path.join(self.base_dir, "output")
        self.models_dir = models_dir or os.path.join(self.base_dir, "models")
        self.checkpoints_dir = os.path.join(self.models_dir, "checkpoints")
        self.log_path = os.path.join(self.base_dir, "comfyui.log")
        self.client_id = uuid.uuid4().hex
        self._checkpoints = checkpoints or {}
        self._extra_args = extra_args
        self.cpu = cpu  # False: ComfyUI picks its device (a GPU, with dynamic VRAM on NVIDIA under 0.33)
        self.proc: subprocess.Popen | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    def _lay_out(self) -> None:
        custom_nodes = os.path.join(self.base_dir, "custom_nodes")
        os.makedirs(custom_nodes, exist_ok=True)
        os.makedirs(self.output_dir, exist_ok=True)
        os.makedirs(self.checkpoints_dir, exist_ok=True)
        link = os.path.join(custom_nodes, PACK_DIR_NAME)
        if os.path.islink(link) and os.path.realpath(link) != os.path.realpath(REPO_ROOT):
            os.unlink(link)  # a reused base folder that links another checkout of the pack
        if not os.path.lexists(link):
            os.symlink(REPO_ROOT, link)
        for path in self._checkpoints.values():
            dest = os.path.join(self.checkpoints_dir, os.path.basename(path))
            if not os.path.lexists(dest):
                os.symlink(os.path.abspath(path), dest)

    def start(self, timeout: float = 300.0) -> "ComfyServer":
        self._lay_out()
        # ComfyUI's default database lives in its own tree's user/ folder, which a read-only or fresh tree
        # lacks ("Failed to initialize database"); each server gets one in its base folder instead.
        user_dir = os.path.join(self.base_dir, "user")
        os.makedirs(user_dir, exist_ok=True)
        args = [self.python, "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", self.base_dir, "--disable-auto-launch",
                "--database-url", f"sqlite:///{os.path.join(user_dir, 'comfyui.db')}", *self._extra_args]
        if self.models_dir != os.path.join(self.base_dir, "models"):
            args += ["--extra-model-paths-config", self._write_model_paths()]
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, cwd=self.comfyui_dir, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ComfyError(f"ComfyUI exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=5)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1.0)
        self.stop()
        raise ComfyError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s:\n{self.log_tail()}")

    def _write_model_paths(self) -> str:
        path = os.path.join(self.base_dir, "extra_model_paths.yaml")
        with open(path, "w") as f:
            f.write(f"user_models:\n  base_path: {self.models_dir}\n  checkpoints: checkpoints\n  vae: vae\n")
        return path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=20)
        if getattr(self, "_log", None):
            self._log.close()

    def cleanup(self) -> None:
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # ---- logs ------------------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    # ---- HTTP ------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str, timeout: float = 60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def post_prompt(self, prompt: dict) -> tuple[int, dict]:
        status, raw = self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        try:
            return status, json.loads(raw)
        except json.JSONDecodeError:
            return status, {"raw": raw.decode("utf-8", "replace")}

    def queue(self, prompt: dict) -> str:
        status, answer = self.post_prompt(prompt)
        if status != 200:
            raise ComfyError(f"/prompt rejected the prompt ({status}): {json.dumps(answer, indent=1)}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600, poll_timeout: float = 60) -> dict:
        """The prompt's history entry once it has run. `poll_timeout`: how long one /history request may take
        (a server holding the GIL through a multi-GB save answers slowly)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get_json(f"/history/{prompt_id}", timeout=poll_timeout)
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {})
                if status.get("status_str") == "error" or not status.get("completed", True):
                    raise ComfyError(f"prompt {prompt_id} failed: {json.dumps(status.get('messages'), indent=1)}"
                                     f"\n--- server log ---\n{self.log_tail()}")
                return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise ComfyError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 600, poll_timeout: float = 60) -> dict:
        """Queues an API-format prompt, waits for it, and returns its `outputs` (node id -> ui dict)."""
        return self.wait(self.queue(prompt), timeout, poll_timeout)["outputs"]

    def delete_saved_models(self) -> int:
        """Deletes the model files tests saved under the output folder (an fp32 SD1.5 merge is 4.3 GB, and one
        session server would otherwise keep every module's saves on disk); returns how many it deleted."""
        paths = [os.path.join(root, name) for root, _, names in os.walk(self.output_dir) for name in names
                 if name.endswith(".safetensors")]
        for path in paths:
            os.remove(path)
        return len(paths)

    def free_memory(self, settle: float = 3.0) -> None:
        """Unloads every model and drops ComfyUI's node cache (its /free route), so the next test module
        starts from an empty server: three SD1.5 models in fp32 plus a patched clone fill most of a 24 GB CI
        machine, and the cache would otherwise keep one module's models alive into the next."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.request("POST", "/free", {"unload_models": True, "free_memory": True})
        time.sleep(settle)  # the prompt worker acts on the flags at once, between prompts

    def interrupt(self) -> None:
        self.request("POST", "/interrupt", {})

    def view(self, filename: str, subfolder: str = "", type_: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type_})
        status, raw = self.request("GET", f"/view?{q}")
        if status != 200:
            raise ComfyError(f"/view {filename} answered {status}")
        return raw

    def images(self, outputs: dict, node_id: str) -> list[bytes]:
        """PNG bytes of the images that node `node_id` reported, fetched through /view."""
        return [self.view(i["filename"], i.get("subfolder", ""), i.get("type", "output"))
                for i in outputs[str(node_id)].get("images", [])]
