"""``python -m ofsre.platform.runtime <config.json>``: the detached runtime started by ``ofsre platform up
--detach``."""

import sys
from pathlib import Path

from .process import serve_config_file

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m ofsre.platform.runtime <config.json>  (use `ofsre platform up --detach`)")
    sys.exit(serve_config_file(Path(sys.argv[1])))
