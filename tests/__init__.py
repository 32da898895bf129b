"""memjax's tests: a package, so that test files and the scripts they run in a subprocess import shared code as
``from tests.helpers import ...`` (run from the repository root: ``python3 -m pytest``, or
``python3 -m tests.multidevice_check``). Imports nothing itself: a subprocess sets XLA_FLAGS before JAX loads.
"""
