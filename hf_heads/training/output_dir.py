"""An output folder's life: checked before training, held by one run at a time, resumed from what survived.

Everything here runs before the first training step, so that a folder that cannot hold the run, a folder another
run is writing to, or a damaged checkpoint is reported while nothing has been computed and nothing can be lost.
"""

import json
import os
import shutil
import socket
import struct
import tempfile
import time
import zipfile
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .errors import RecipeError


# What marks a folder as holding a model that the user saved (weights, adapter or the config that goes with them).
SAVED_MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "adapter_config.json")
# Leading underscore: `Trainer.push_to_hub` ignores `_*`, so the lock never reaches the Hub.
LOCK_NAME = "_hf_heads_run.lock"
TRAINER_STATE_NAME = "trainer_state.json"


def checkpoint_folders(output_dir) -> list[Path]:
    """`checkpoint-N` folders in `output_dir`, newest (highest N) first."""
    folders = [
        path for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.is_dir() and path.name.rsplit("-", 1)[-1].isdigit()
    ]
    return sorted(folders, key=lambda path: int(path.name.rsplit("-", 1)[-1]), reverse=True)


def check_output_dir(output_dir, *, overwrite: bool, resuming: bool) -> None:
    """
    Refuses a folder that holds a model or checkpoints unless the user said what to do with it
    (`--overwrite_output_dir` or `--resume_from_checkpoint`), and a folder that cannot be written to.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise RecipeError(f"`--output_dir` {output_dir} is a file; give a folder (it is created if missing).")
    saved = [name for name in SAVED_MODEL_FILES if (output_dir / name).is_file()]
    checkpoints = [path.name for path in checkpoint_folders(output_dir)]
    if (saved or checkpoints) and not (overwrite or resuming):
        held = ", ".join(saved + checkpoints[:3] + (["..."] if len(checkpoints) > 3 else []))
        raise RecipeError(
            f"`--output_dir` {output_dir} already holds a model or checkpoints ({held}); choose another folder, "
            "pass `--resume_from_checkpoint true` to continue the run that wrote them, or "
            "`--overwrite_output_dir true` to replace them."
        )
    check_writable(output_dir)


def check_writable(output_dir: Path) -> None:
    """
    Writes (and removes) a probe folder in `output_dir`, or in the nearest folder above it that exists, so that a
    folder the run could not write is found before training, not after. Nothing is left behind.
    """
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        os.rmdir(tempfile.mkdtemp(prefix="_write_test_", dir=existing))
    except OSError as error:
        raise PermissionError(
            f"`--output_dir` {output_dir} cannot be written to ({error.strerror}); choose a folder you can write to."
        ) from error


def checkpoint_bytes(model, optimizer_states_per_parameter: int = 2) -> int:
    """
    What one `Trainer` checkpoint of `model` takes on disk, about: the weights it saves plus the optimizer's state
    (AdamW keeps two tensors per trained parameter). Frozen parameters count once, as weights.
    """
    total = 0
    for parameter in model.parameters():
        size = parameter.numel() * parameter.element_size()
        total += size * (1 + optimizer_states_per_parameter) if parameter.requires_grad else size
    return total


def check_room(output_dir, bytes_needed: int, what: str) -> None:
    """The disk under `output_dir` has room for `bytes_needed` (what the run will write), or the run stops now."""
    free = shutil.disk_usage(Path(output_dir)).free
    if free < bytes_needed:
        raise OSError(
            f"`--output_dir` {output_dir} has {free / 2**20:,.0f} MiB free; {what} need about "
            f"{bytes_needed / 2**20:,.0f} MiB. Free some space, choose another folder, or keep fewer checkpoints "
            "(`--save_total_limit`, `--save_strategy`)."
        )


class RunLock:
    """
    A lock file in the output folder that refuses a second live run on the same folder. A lock left by a process that
    is gone (killed, crashed) is taken over with a message. Only the process that writes outputs holds it.

        with RunLock(output_dir):
            trainer.train()
            ...
    """

    def __init__(self, output_dir, log=print):
        self.path = Path(output_dir) / LOCK_NAME
        self.log = log
        self.held = False
        self.created_folder = False

    def acquire(self) -> None:
        self.created_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(descriptor, "w") as file:
                json.dump(owner, file)
            self.held = True
            return
        raise RuntimeError(f"Could not take the lock {self.path}; another run is starting in the same folder.")

    def _take_over_if_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            owner = {}  # half-written by a run killed while it was taking the lock
        if owner.get("host") not in (None, socket.gethostname()):
            raise RuntimeError(
                f"`--output_dir` {self.path.parent} is in use by a run on {owner['host']} (pid {owner.get('pid')}, "
                f"started {owner.get('started')}). Wait for it or choose another folder; if that run is gone, delete "
                f"{self.path}."
            )
        if owner.get("pid") is not None and _process_alive(owner["pid"]):
            raise RuntimeError(
                f"`--output_dir` {self.path.parent} is in use by a running process (pid {owner['pid']}, started "
                f"{owner.get('started')}). Wait for it to finish or choose another folder."
            )
        self.log(
            f"Taking over {self.path}: the run that held it (pid {owner.get('pid')}, started {owner.get('started')}) "
            "is no longer running."
        )
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
            if self.created_folder and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()  # a run that failed before writing anything leaves no trace

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def checkpoint_damage(folder: Path) -> str | None:
    """
    What is wrong with a checkpoint folder, or None when it is complete: its trainer state parses, its weights files
    are whole (safetensors header and length agree), and its torch archives (optimizer, scheduler, RNG) pass their
    CRC checks. A run killed while saving leaves exactly these defects.
    """
    state = folder / TRAINER_STATE_NAME
    if not state.is_file():
        return f"no {TRAINER_STATE_NAME} (the run stopped while saving it)"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError) as error:
        return f"{state.name} does not parse ({error})"
    weights = sorted(folder.glob("*.safetensors"))
    # FSDP and DeepSpeed keep their sharded states in folders of their own, which their loaders check.
    sharded = any(folder.glob("pytorch_model_fsdp*")) or any(folder.glob("global_step*"))
    if not weights and not sharded:
        return "no weights (*.safetensors)"
    for path in weights:
        problem = _safetensors_damage(path)
        if problem:
            return f"{path.name}: {problem}"
    for path in sorted(folder.glob("*.pt")) + sorted(folder.glob("*.pth")) + sorted(folder.glob("*.bin")):
        try:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
        except (OSError, zipfile.BadZipFile) as error:
            return f"{path.name}: not a complete torch archive ({error})"
        if broken is not None:
            return f"{path.name}: entry {broken} fails its CRC check"
    return None


def _safetensors_damage(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            return "truncated (no header)"
        (header_length,) = struct.unpack("<Q", head)
        if 8 + header_length > size:
            return "truncated (header longer than the file)"
        try:
            header = json.loads(file.read(header_length))
        except ValueError:
            return "header does not parse"
    end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    if 8 + header_length + end != size:
        return f"truncated ({size:,} bytes, the header describes {8 + header_length + end:,})"
    return None


def resolve_resume_checkpoint(value: str | None, output_dir, log=print) -> str | None:
    """
    `--resume_from_checkpoint`: a checkpoint folder, or `true`/`last` for the newest *complete* checkpoint in
    `output_dir`. Damaged newer checkpoints are named in the log and skipped (left on disk for the user to inspect); a
    damaged folder given by name is an error naming what is wrong and the checkpoint to use instead.
    """
    if value is None or str(value).lower() == "false":
        return None
    if str(value).lower() in ("true", "last"):
        skipped = []
        for folder in checkpoint_folders(output_dir):
            problem = checkpoint_damage(folder)
            if problem is None:
                if skipped:
                    log("Resuming from " + f"{folder}; skipped damaged " + "; ".join(skipped) + ".")
                return str(folder)
            skipped.append(f"{folder.name} ({problem})")
        found = f" (damaged: {'; '.join(skipped)})" if skipped else ""
        raise RecipeError(
            f"`--resume_from_checkpoint`={value!r}: `--output_dir` {output_dir} holds no complete checkpoint{found}. "
            "Start a new run with `--overwrite_output_dir true`, or give a checkpoint folder."
        )
    folder = Path(value)
    if not folder.is_dir():
        raise RecipeError(
            f"`--resume_from_checkpoint`={value!r} is not a folder; give a checkpoint-N folder or `true`."
        )
    problem = checkpoint_damage(folder)
    if problem is not None:
        others = [
            path for path in checkpoint_folders(folder.parent) if path != folder and checkpoint_damage(path) is None
        ]
        instead = f" The newest complete one is {others[0]}." if others else ""
        raise RecipeError(f"`--resume_from_checkpoint` {folder} is damaged: {problem}.{instead}")
    return str(folder)
