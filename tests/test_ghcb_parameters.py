"""GhcbMsrUnit and its configurations refuse bad parameters with messages naming them."""

import warnings

import pytest

from apwake.rtl.ghcb_msr import GhcbMsrUnit


@pytest.fixture(autouse=True)
def _quiet():
    # constructors that raise leave half-built elaboratables behind
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(n_vcpus=0), r"n_vcpus must be 1 to 4096, not 0"),
    (dict(n_vcpus=4097), r"n_vcpus must be 1 to 4096, not 4097"),
    (dict(n_vcpus=2, bsp_index=2), r"bsp_index must be 0 to 1, not 2"),
    (dict(n_vcpus=2, min_version=0), r"min_version must be 1 to 65535, not 0"),
    (dict(n_vcpus=2, min_version=3, max_version=2), r"min_version 3 is above max_version 2"),
    (dict(n_vcpus=2, cbit=12), r"cbit must be a physical address bit 32 to 63, not 12"),
    (dict(n_vcpus=2, cpuid={1: (1, 2, 3)}), r"cpuid\[1\] must map a 32-bit function to four 32-bit values"),
    (dict(n_vcpus=2, hv_features=1 << 52), r"hv_features must fit 52 bits"),
])
def test_parameter_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GhcbMsrUnit(**kwargs)


def test_sev_info_is_the_reset_value():
    unit = GhcbMsrUnit(n_vcpus=1, min_version=1, max_version=2, cbit=51)
    unit._MustUse__silence = True          # inspected, not elaborated
    assert unit.sev_info() == 0x0002_0001_3300_0001
