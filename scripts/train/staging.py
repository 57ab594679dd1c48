"""Writing a folder the server may load: build it beside its place, put it there whole."""

import os
import shutil
import tempfile
from contextlib import contextmanager


@contextmanager
def staged(dst, prefix):
    """A temporary folder beside `dst` to build in. When the block ends without an error the
    folder replaces `dst` (an old one moved aside first, then removed); on an error it is removed
    and `dst` is untouched: nothing half-written is ever where the server would load it."""
    parent = os.path.dirname(os.path.abspath(dst)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield tmp
        if os.path.exists(dst):
            old = tmp + ".old"
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
