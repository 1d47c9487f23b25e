"""Fill a models folder with the Wan2.2 files of one or more model sets from the Hugging Face Hub.

`python -m wan_worker.download [--set i2v-14b,t2v-14b,ti2v-5b,s2v-14b,animate-14b,postprocess]` (and `scripts/download_models.sh`,
which wraps it) is how a volume gets its files (~38 GB for i2v-14b): resumable, verified and atomic,
so a run can be cut at any moment and simply run again. A file several sets share (the text
encoder, the 2.1 VAE) is fetched once. The contract, per file:

- skip it when it is already complete: the hub's size and a parseable safetensors header (cheap,
  no hashing of 14 GB files on every run; `--verify` forces a full sha256);
- otherwise download into `.<name>.part` next to the final name, resuming a partial temp file with
  an HTTP Range request, and rename it to the final name only once its size and the hub's LFS
  sha256 match. Nothing half written is ever left under the final name.

huggingface_hub does the hub side (endpoint from HF_ENDPOINT, HF_TOKEN auth, URL building, the
paths-info metadata call, its HTTP session and error types). The bytes are streamed here, because
`hf_hub_download` cannot give the temp-name + resume + verify-before-rename contract in place.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

import httpx2
from huggingface_hub import HfApi, constants, get_token, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
from huggingface_hub.utils import tqdm as hf_tqdm

from . import models
from .errors import WorkerError
from .models import DEFAULT_SET, MANIFEST, MODEL_SETS, ModelFile, files_of, parse_sets
from .settings import Settings, load_settings

log = logging.getLogger("wan_worker.download")

REVISION = "main"
CHUNK_BYTES = 8 * 1024 * 1024  # reads of local files (hashing); the network is read as it arrives
RETRY_DELAYS_S = (0, 2, 5, 10, 30)  # after a dropped connection; the first resume is immediate
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class DownloadError(Exception):
    """A failure the user can act on, in one line: what failed and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """What the hub says the file is: the authority for 'complete' and 'correct'."""

    size: int
    sha256: str


@dataclass(frozen=True)
class Target:
    """One manifest file and the path it must end up at."""

    model: ModelFile
    path: Path

    @property
    def part(self) -> Path:
        """The temp name: hidden, in the same folder, so the final rename is atomic."""
        return self.path.with_name(f".{self.path.name}.part")


# --- where files go -------------------------------------------------------------------------------


def select_models(only: Sequence[str] = (), sets: str | None = None) -> list[ModelFile]:
    """The files of `sets` (comma-separated; default i2v-14b), or the files named by `--only`
    (file name or folder/name), each once."""
    if not only:
        try:
            return files_of(parse_sets(sets or DEFAULT_SET))
        except ValueError as exc:
            raise DownloadError(f"{exc}.") from None
    by_name = {m.name: m for m in MANIFEST} | {m.rel_path: m for m in MANIFEST}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        names = ", ".join(m.name for m in MANIFEST)
        raise DownloadError(f"Unknown model file {unknown[0]!r}; --only takes one of: {names}.")
    chosen = {by_name[n] for n in only}
    return [m for m in MANIFEST if m in chosen]


def plan_targets(models_: Sequence[ModelFile], settings: Settings | None = None,
                 dest: Path | None = None) -> list[Target]:
    """Where each file goes.

    `dest` gives `dest/<folder>/<name>`. Without it, each file goes to the first directory ComfyUI
    searches for its folder (from extra_model_paths.yaml), so the download lands exactly where
    ComfyUI and the worker's check look first.
    """
    if dest is not None:
        return [Target(m, Path(dest) / m.folder / m.name) for m in models_]
    dirs = models.model_dirs(settings or load_settings())
    targets = []
    for m in models_:
        searched = dirs.get(m.folder) or []
        if not searched:
            raise DownloadError(
                f"No directory for ComfyUI folder {m.folder!r} in the model paths config; "
                "fix extra_model_paths.yaml or pass --dest DIR.")
        targets.append(Target(m, Path(searched[0]) / m.name))
    return targets


# --- what the hub says ----------------------------------------------------------------------------


def fetch_remote_info(models_: Sequence[ModelFile]) -> dict[ModelFile, RemoteFile]:
    """Size and LFS sha256 of every file, one paths-info call per repository.

    paths-info exposes the sha256 as an explicit field (`RepoFile.lfs.sha256`), which is cleaner
    than inferring it from an ETag, and it answers for several files in one request.
    """
    api = HfApi()
    info: dict[ModelFile, RemoteFile] = {}
    for repo in dict.fromkeys(m.repo for m in models_):
        wanted = [m for m in models_ if m.repo == repo]
        try:
            entries = api.get_paths_info(repo, [m.repo_path for m in wanted], revision=REVISION)
        except (httpx2.HTTPError, OSError) as exc:  # hub errors are both; translated to one line
            raise explain(exc, f"{repo}@{REVISION}") from None
        found = {e.path: e for e in entries}
        for m in wanted:
            info[m] = _remote_file(m, found.get(m.repo_path))
    return info


def _remote_file(m: ModelFile, entry: object | None) -> RemoteFile:
    lfs = getattr(entry, "lfs", None)
    if entry is None:
        raise DownloadError(
            f"{m.repo}/{m.repo_path} was not found at {constants.ENDPOINT} (404, revision "
            f"{REVISION}); check the manifest's repo and path, or HF_ENDPOINT.")
    if lfs is None:
        raise DownloadError(
            f"{m.repo}/{m.repo_path} has no LFS sha256 on the hub, so it cannot be verified; "
            "check the manifest's repo and path.")
    return RemoteFile(size=int(lfs.size), sha256=str(lfs.sha256).lower())


def explain(exc: BaseException, what: str) -> DownloadError:
    """Turn a hub/network exception into one line that says what to do (never the token)."""
    endpoint = constants.ENDPOINT
    if isinstance(exc, DownloadError):
        return exc
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError(f"HF_HUB_OFFLINE is set, so {what} cannot be fetched; unset it.")
    if isinstance(exc, (httpx2.ConnectError, httpx2.ConnectTimeout)):
        return DownloadError(
            f"Cannot reach the Hugging Face Hub at {endpoint} for {what} ({_short(exc)}); "
            "check the network or HF_ENDPOINT.")
    if isinstance(exc, httpx2.TransportError):
        return DownloadError(
            f"The connection to {endpoint} failed while fetching {what} ({_short(exc)}); "
            "check the network and run again (downloads resume where they stopped).")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        if get_token():
            return DownloadError(f"The hub at {endpoint} rejected HF_TOKEN for {what} (401); "
                                 "check that the token is valid and can read the repo.")
        return DownloadError(f"The hub at {endpoint} requires a login for {what} (401: private or "
                             "gated repo, or no such repo); set HF_TOKEN to an access token.")
    if status == 403:
        return DownloadError(f"The hub at {endpoint} refused access to {what} (403); accept the "
                             "repo's terms on its page and use an HF_TOKEN with read access.")
    if status == 404:
        return DownloadError(f"{what} was not found at {endpoint} (404); check the repo and path "
                             "in the manifest, or HF_ENDPOINT.")
    if status is not None:
        return DownloadError(f"The hub at {endpoint} answered {status} for {what}; "
                             "try again later.")
    return DownloadError(f"Fetching {what} from {endpoint} failed: {_short(exc)}.")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- what is on disk ------------------------------------------------------------------------------


def header_problem(path: Path, name: str | None = None) -> str | None:
    """Why the file is not a complete model file (safetensors; an ONNX or torch file by its name), or None.

    The very check every job runs (models.py: 8-byte length + JSON header, every tensor inside the
    file): reads a few KB, not the file, and catches empty, truncated and non-safetensors files.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or type(exc).__name__})"
    return models.file_problem(str(path), size, name)


def header_ok(path: Path, name: str | None = None) -> bool:
    return header_problem(path, name) is None


def sha256_of(path: Path, progress: bool = False) -> str:
    """Full sha256 of a file; only for --verify and for resuming a partial download."""
    h = hashlib.sha256()
    with path.open("rb") as f, _bar(f"sha256 {path.name}", path.stat().st_size, 0, progress) as bar:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def problem_with(target: Target, remote: RemoteFile | None, verify: bool,
                 progress: bool = False) -> str | None:
    """Why the file at the final name is not usable (None: it is complete and valid).

    Size + header is the everyday test; the sha256 only with `verify`, because hashing 38 GB on
    every run would cost minutes for no news.
    """
    path = target.path
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if remote is not None and size != remote.size:
        return f"size {size} bytes, the hub has {remote.size}"
    problem = header_problem(path)
    if problem is not None:
        return problem
    if verify and remote is not None and sha256_of(path, progress) != remote.sha256:
        return "sha256 differs from the hub's"
    return None


# --- downloading one file -------------------------------------------------------------------------


class PartFile:
    """The temp file being filled, with a running sha256 of everything in it.

    Resuming hashes the bytes already there once, so the final check needs no second read.
    """

    def __init__(self, path: Path, expected_size: int, progress: bool) -> None:
        self.path = path
        self.sha = hashlib.sha256()
        self.size = 0
        if path.exists() and path.stat().st_size > expected_size:
            path.unlink()  # longer than the real file: cannot be a prefix of it
        if path.exists():
            with path.open("rb") as f, _bar(f"rehash {path.name}", path.stat().st_size, 0,
                                             progress) as bar:
                for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                    self.sha.update(chunk)
                    self.size += len(chunk)
                    bar.update(len(chunk))
        self._f: IO[bytes] = path.open("ab")

    def append(self, chunk: bytes) -> None:
        self._f.write(chunk)
        self.sha.update(chunk)
        self.size += len(chunk)

    def restart(self) -> None:
        """Empty the file: the server ignored our Range and is sending from byte 0."""
        self._f.seek(0)
        self._f.truncate()
        self.sha = hashlib.sha256()
        self.size = 0

    def close(self) -> None:
        """Flush to the disk, so a crash after the rename cannot leave a short final file."""
        if self._f.closed:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


def download(target: Target, remote: RemoteFile, *, retries: int, progress: bool) -> int:
    """Fetch one file into its temp name, verify it, rename it; the bytes transferred."""
    target.path.parent.mkdir(parents=True, exist_ok=True)
    have = target.part.stat().st_size if target.part.exists() else 0
    _check_space(target, remote.size - min(have, remote.size))
    part = PartFile(target.part, remote.size, progress)
    resumed_from = part.size
    try:
        with _bar(target.model.name, remote.size, part.size, progress) as bar:
            _fill(part, target, remote, retries, bar)
        part.close()
    except BaseException as exc:
        _abandon(part)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DownloadError(
                f"Disk full writing {target.part}; free space on the volume and run again "
                "(the partial download is kept and will resume).") from None
        raise
    _verify_and_publish(target, remote, part)
    return remote.size - resumed_from


def _abandon(part: PartFile) -> None:
    """Stop writing but keep the bytes, so the next run resumes (an empty file is just litter)."""
    with contextlib.suppress(OSError):
        part.close()
    if part.size == 0:
        part.path.unlink(missing_ok=True)


def _fill(part: PartFile, target: Target, remote: RemoteFile, retries: int, bar: hf_tqdm) -> None:
    """Stream until the temp file has the hub's size, resuming on dropped connections."""
    m = target.model
    url = hf_hub_url(m.repo, m.repo_path, revision=REVISION)
    headers = build_hf_headers()  # carries HF_TOKEN if set; httpx2 drops it on off-site redirects
    headers["Accept-Encoding"] = "identity"  # byte ranges only make sense on the raw file
    failures = 0
    while part.size < remote.size:
        before = part.size
        try:
            _stream(url, headers, part, remote.size, bar)
        except (httpx2.TransportError, HfHubHTTPError) as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if isinstance(exc, HfHubHTTPError) and status not in TRANSIENT_STATUS:
                raise explain(exc, f"{m.repo}/{m.repo_path}") from None
            failures = 1 if part.size > before else failures + 1
            if failures > retries:
                raise explain(exc, f"{m.repo}/{m.repo_path}") from None
            delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S)) - 1]
            log.warning("%s: connection lost at %d of %d bytes (%s); resuming in %d s",
                        m.name, part.size, remote.size, _short(exc), delay)
            time.sleep(delay)


def _stream(url: str, headers: dict[str, str], part: PartFile, total: int, bar: hf_tqdm) -> None:
    """One GET from where the temp file ends (a Range request when it is not empty)."""
    request_headers = dict(headers)
    if part.size:
        request_headers["Range"] = f"bytes={part.size}-"
    timeout = httpx2.Timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    with get_session().stream("GET", url, headers=request_headers, timeout=timeout) as resp:
        hf_raise_for_status(resp)
        if part.size and resp.status_code != 206:
            part.restart()  # the server ignored the Range and sends the whole file
            bar.reset(total=total)
        elif part.size and not resp.headers.get("Content-Range", "").startswith(
                f"bytes {part.size}-"):
            part.restart()  # unusable answer: the next run starts this file afresh
            raise DownloadError(f"The hub answered a resume of {url} with the wrong byte range "
                                f"({resp.headers.get('Content-Range')!r}); run again.")
        for chunk in resp.iter_bytes():  # as it arrives: a dropped connection loses nothing kept
            part.append(chunk)
            bar.update(len(chunk))
            if part.size > total:
                break


def _verify_and_publish(target: Target, remote: RemoteFile, part: PartFile) -> None:
    """Rename the temp file to the final name only if it is exactly the hub's file."""
    rel = target.model.rel_path
    got = part.sha.hexdigest()
    if part.size != remote.size:
        target.part.unlink(missing_ok=True)
        raise DownloadError(f"{rel}: received {part.size} bytes, the hub says {remote.size}; "
                            "the download was deleted, run again.")
    if got != remote.sha256:
        target.part.unlink(missing_ok=True)
        raise DownloadError(f"Checksum mismatch for {rel}: sha256 {got[:16]}…, the hub says "
                            f"{remote.sha256[:16]}…; the download was deleted, run again.")
    if not header_ok(target.part, target.model.name):
        target.part.unlink(missing_ok=True)
        raise DownloadError(f"{rel} on the hub is not a valid {target.model.name.rsplit('.', 1)[-1]} file; check the "
                            "manifest's repo and path.")
    os.replace(target.part, target.path)


def _check_space(target: Target, needed: int) -> None:
    """Fail before streaming 14 GB into a volume that cannot hold it."""
    free = shutil.disk_usage(target.path.parent).free
    if needed > free:
        raise DownloadError(
            f"Not enough space for {target.model.rel_path} in {target.path.parent}: needs "
            f"{human(needed)}, {human(free)} free; grow the volume or free space.")


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialise downloads into one folder across processes (workers sharing a network volume).

    A second worker waits, then finds the file complete and skips it. Filesystems without flock
    just go unlocked: the sha256 check still refuses a file two writers mangled.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting: another process is downloading into {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)


# --- the whole run --------------------------------------------------------------------------------


def ensure_models(settings: Settings | None = None, dest: Path | None = None, *,
                  only: Sequence[str] = (), sets: str | None = None, verify: bool = False,
                  retries: int = 5, progress: bool | None = None) -> int:
    """Make every file of `sets` (or `only`) present and valid; the exit code (0 ok, 1 failed).

    This is what the container entrypoint runs when AUTO_DOWNLOAD_MODELS names sets (`true`:
    i2v-14b). Failures are printed as one line on stderr.
    """
    show = sys.stdout.isatty() if progress is None else progress
    return guarded(lambda: fetch_all(plan_targets(select_models(only, sets), settings, dest),
                                     verify=verify, retries=retries, progress=show))


def guarded(run: Callable[[], int]) -> int:
    """Run, and turn any failure into one 'error: ...' line and a non-zero exit code."""
    try:
        return run()
    except (DownloadError, WorkerError) as exc:
        return fail(exc)
    except KeyboardInterrupt:
        fail(DownloadError("Interrupted; run again to resume."))
        return 130
    except Exception as exc:  # noqa: BLE001 - the promise is one clear line, never a traceback
        log.debug("unexpected failure", exc_info=True)
        return fail(DownloadError(f"Unexpected {type(exc).__name__}: {_short(exc)}"))


def fetch_all(targets: Sequence[Target], *, verify: bool, retries: int, progress: bool) -> int:
    """Skip what is complete, download the rest, one line per file. Raises DownloadError."""
    start = time.monotonic()
    try:
        remote = fetch_remote_info([t.model for t in targets])
    except DownloadError as exc:
        return _offline_fallback(targets, exc, verify)
    fetched = 0
    for t in targets:
        with _folder_lock(t.path.parent):
            fetched += _ensure_one(t, remote[t.model], verify=verify, retries=retries,
                                   progress=progress)
    elapsed = time.monotonic() - start
    say(f"ok: {len(targets)} model files present and valid "
        f"(downloaded {human(fetched)} in {elapsed:.0f} s)")
    return 0


def _ensure_one(t: Target, remote: RemoteFile, *, verify: bool, retries: int,
                progress: bool) -> int:
    """One file: skip, or (re)download it; the bytes downloaded."""
    problem = problem_with(t, remote, verify, progress)
    if problem is None:
        say(f"present  {t.model.rel_path}  {human(remote.size)}  {t.path}")
        return 0
    if problem != "missing":
        say(f"replace  {t.model.rel_path}: {problem}")
        t.path.unlink()
    started = time.monotonic()
    got = download(t, remote, retries=retries, progress=progress)
    seconds = max(time.monotonic() - started, 1e-3)
    say(f"fetched  {t.model.rel_path}  {human(remote.size)} in {seconds:.0f} s "
        f"({human(got / seconds)}/s)  {t.path}")
    return got


def _offline_fallback(targets: Sequence[Target], exc: DownloadError, verify: bool) -> int:
    """Without the hub, files that are already complete by their header are still fine.

    So a worker whose volume is full does not fail to start because the hub is down; anything
    missing or damaged (or --verify) still needs the hub and fails with its reason.
    """
    if verify or any(problem_with(t, None, False) for t in targets):
        raise exc
    say(f"note: could not compare with the hub ({exc}); all {len(targets)} files are present "
        "with complete safetensors headers")
    return 0


def dry_run(targets: Sequence[Target], *, verify: bool = False) -> int:
    """List what a run would fetch, with sizes from the hub (or the manifest's estimate)."""
    try:
        remote: dict[ModelFile, RemoteFile] = fetch_remote_info([t.model for t in targets])
    except DownloadError as exc:
        say(f"note: {exc} Sizes below are the manifest's estimates (~).")
        remote = {}
    total = count = 0
    for t in targets:
        r = remote.get(t.model)
        size = human(r.size) if r else "~" + human(t.model.approx_bytes)
        problem = problem_with(t, r, verify)
        if problem is None:
            say(f"present      {t.model.rel_path}  {size}  {t.path}")
            continue
        action = "would fetch" if problem == "missing" else f"would replace ({problem})"
        say(f"{action}  {t.model.rel_path}  {size}  -> {t.path}")
        total += r.size if r else t.model.approx_bytes
        count += 1
    say(f"total: {count} of {len(targets)} files to fetch, {total / models.GB:.2f} GB "
        f"from {constants.ENDPOINT}")
    return 0


# --- output ---------------------------------------------------------------------------------------


def human(n: float) -> str:
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def say(line: str) -> None:
    print(line, flush=True)


def fail(exc: BaseException) -> int:
    message = exc.message if isinstance(exc, WorkerError) else str(exc)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def _bar(desc: str, total: int, initial: int, enabled: bool) -> hf_tqdm:
    """A byte progress bar on a terminal; a silent no-op otherwise (logs get one line per file)."""
    return hf_tqdm(desc=desc, total=total, initial=initial, unit="B", unit_scale=True,
                   unit_divisor=1000, disable=not enabled, leave=False, dynamic_ncols=True)


# --- CLI ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m wan_worker.download",
        description="Download the Wan2.2 model files of one or more model sets from the Hugging "
                    "Face Hub: skips complete files, resumes partial ones, verifies sha256 before "
                    "the final rename; a file shared by sets is fetched once. Uses HF_TOKEN and "
                    "HF_ENDPOINT if set.")
    p.add_argument("--set", dest="sets", default=None, metavar="SETS",
                   help=f"comma-separated model sets: {', '.join(MODEL_SETS)}, or all "
                        f"(default {DEFAULT_SET}); not together with --only")
    p.add_argument("--dest", type=Path, metavar="DIR",
                   help="put files at DIR/<folder>/<name> (default: the first directory ComfyUI "
                        "searches for each folder, from extra_model_paths.yaml)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="only this file (name or folder/name); repeatable")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be fetched, with sizes and the total; download nothing")
    p.add_argument("--verify", action="store_true",
                   help="also sha256 files that are already present (slow: reads every byte)")
    p.add_argument("--retries", type=int, default=5, metavar="N",
                   help="resume attempts per file after a dropped connection (default 5)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only and args.sets:
        return fail(DownloadError("Give --set or --only, not both (--only names single files)."))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    for chatty in ("httpx", "httpx2", "httpcore", "httpcore2"):  # one line per request is noise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if args.dry_run:
        return guarded(lambda: dry_run(plan_targets(select_models(args.only, args.sets), None, args.dest),
                                       verify=args.verify))
    return ensure_models(dest=args.dest, only=args.only, sets=args.sets, verify=args.verify,
                         retries=max(args.retries, 0))


if __name__ == "__main__":
    sys.exit(main())
