"""Stands in for get-pip.py, which ansible-test downloads from
ci-files.testing.ansible.com to put pip into each of its empty virtual
environments (`python -m venv --without-pip`). That host is not always
reachable (a CI runner allowed only the package index): this takes pip
from the interpreter's own ensurepip instead, then, as get-pip.py does,
runs `pip install` with the arguments it was given (the exact pip,
setuptools and wheel versions ansible-test pins, from the package index).

scripts/test-ansible copies it to the cache path ansible-test reads first
(~/.ansible/test/cache/get_pip_VERSION.py, under a HOME of its own).
"""

import ensurepip
import importlib
import os
import runpy
import sys

# ensurepip turns pip's configuration off (PIP_CONFIG_FILE=/dev/null) for
# its own, offline install; the install below must see the machine's (an
# index mirror, a CA bundle), as get-pip.py's does.
environ = dict(os.environ)
ensurepip.bootstrap()
os.environ.clear()
os.environ.update(environ)
importlib.invalidate_caches()
sys.argv = ["pip", "install"] + sys.argv[1:]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
