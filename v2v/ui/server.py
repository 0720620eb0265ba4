"""Starting the page's web server: the checks first (host and password, the output folder), then Gradio, set up
to stay on this machine: no share link, no telemetry, no version check, no font or script from another host, its
upload cache under --out.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidOptions, OutputError

log = logging.getLogger("v2v")

AUTH_ENV = "V2V_UI_AUTH"  # USER:PASS, so that a password need not be typed where `ps` shows it
CACHE = ".cache"  # Gradio's upload cache, under --out


def is_local(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (the loopback addresses, 'localhost')."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'USER:PASS' -> (user, password); InvalidOptions when either is missing."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise InvalidOptions("--auth needs USER:PASS, e.g. --auth maya:a-long-passphrase")
    return user, password


def check_access(host: str, auth: str | None) -> tuple[str, str] | None:
    """The login to ask for; InvalidOptions when the page would be open to other machines without one."""
    login = parse_auth(auth if auth is not None else os.environ.get(AUTH_ENV))
    if login is None and not is_local(host):
        raise InvalidOptions(f"--host {host} lets other machines open the page: add --auth USER:PASS (or set "
                             f"{AUTH_ENV}=USER:PASS), or leave --host out to keep it on this machine")
    return login


def prepare_out(out: Path) -> Path:
    out = Path(out).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the output folder '{out}' ({e.strerror or e}): choose another --out") \
            from None
    from ..media.outputs import writable

    if not writable(out):
        raise OutputError(f"the output folder '{out}' is not writable: choose another --out")
    return out


def offline_environment(out: Path) -> None:
    """What Gradio reads from the environment, set before it is imported: no telemetry, no share link, its
    cache under --out (uploads land there first)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_SHARE"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(out / CACHE)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class Server:
    url: str
    demo: object
    page: object

    def wait(self) -> None:
        """Serve until Ctrl-C (or SIGTERM, which the command line turns into the same)."""
        stop = threading.Event()
        try:
            while not stop.wait(3600):
                pass
        except KeyboardInterrupt:  # the way to stop a server: not an error
            log.info("stopping: a run in progress is cancelled and leaves nothing")
        finally:
            self.close()

    def close(self) -> None:
        self.page.runner.close()
        self.demo.close()


def serve(*, host: str = "127.0.0.1", port: int = 7860, out: Path, in_dir: Path | None = None,
          auth: str | None = None, max_upload: int, options: dict | None = None,
          presets: dict | None = None) -> Server:
    """Start the page (returns once it answers). ``options``: the form's defaults and the Restyler's (the
    `v2v ui` options over the config and preset); ``presets``: the config's, for the form's preset list."""
    login = check_access(host, auth)
    out = prepare_out(out)
    if in_dir is not None:
        in_dir = Path(in_dir).expanduser().resolve()
        if not in_dir.is_dir():
            raise InvalidOptions(f"--in '{in_dir}' is not a folder: give the folder of videos to pick from")
    offline_environment(out)
    options = dict(options or {})
    from ..pipeline import Restyler
    from . import app
    from .handlers import Page

    restyler_options = {k: v for k, v in options.items() if k != "prompt"}
    page = Page(restyler=Restyler(show_progress=False, **restyler_options), out=out, in_dir=in_dir,
                max_upload=max_upload, server_options=options, presets=dict(presets or {}))
    demo = app.build(page)
    demo.queue(default_concurrency_limit=None)
    allowed = [str(out)] + ([str(in_dir)] if in_dir is not None else [])
    try:
        _, url, _ = demo.launch(
            server_name=host, server_port=port or None, auth=login, prevent_thread_lock=True, quiet=True,
            share=False, inbrowser=False, show_error=False, ssr_mode=False, footer_links=[], run_history=False,
            enable_monitoring=False, mcp_server=False, pwa=False, allowed_paths=allowed, max_file_size=max_upload,
            theme=app.theme(), css=app.css(), head=app.head(max_upload))
    except OSError as e:  # the port is taken
        page.runner.close()
        raise InvalidOptions(f"cannot listen on {host}:{port} ({' '.join(str(e).split())}): give another --port") \
            from None
    return Server(url=url, demo=demo, page=page)
