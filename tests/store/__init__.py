"""Store tests: the contract suite every store passes (``contract.py``) and the embedded store's
own tests."""

import pytest

pytest.register_assert_rewrite(f"{__name__}.contract")
