"""What a benchmark ran on, recorded with every result."""

from __future__ import annotations

import datetime
import os
import platform


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def write_result(folder: str, stem: str, result: dict, table: str) -> None:
    """``result`` as ``folder/stem.json`` and its markdown ``table`` as ``folder/stem.md``
    (rewritten after each measured part, so a stopped benchmark keeps what it measured)."""
    import json

    with open(os.path.join(folder, f"{stem}.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    with open(os.path.join(folder, f"{stem}.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
