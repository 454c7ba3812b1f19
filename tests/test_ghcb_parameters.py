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
    (dict(n_vcpus=2, apic_ids=(0, 1, 2)), r"apic_ids must name n_vcpus = 2 vCPUs, not 3"),
    (dict(n_vcpus=2, apic_ids=(0, 1 << 32)), r"apic_ids\[1\] = 0x100000000 is not a 32-bit APIC ID"),
    (dict(n_vcpus=2, apic_ids=(0, -1)), r"apic_ids\[1\] = -0x1 is not a 32-bit APIC ID"),
    (dict(n_vcpus=3, apic_ids=(4, 5, 4)), r"apic_ids\[2\] = 0x4 is also apic_ids\[0\]: APIC IDs must be distinct"),
    (dict(n_vcpus=2, vmsa_features=1 << 64),
     r"vmsa_features must fit 64 bits \(SEV_FEATURES\), not 0x10000000000000000"),
    (dict(n_vcpus=2, snp=True, vmsa_features=0x20),
     r"an SNP VM's vmsa_features must have SNPActive \(bit 0\), which KVM always sets, not 0x20"),
])
def test_parameter_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GhcbMsrUnit(**kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(n_vcpus=2, apic_ids={0, 1}), r"apic_ids must be a tuple of ints, not set"),
    (dict(n_vcpus=2, apic_ids=(0, "1")), r"apic_ids\[1\] must be an int, not str"),
    (dict(n_vcpus=2, apic_ids=(True, 1)), r"apic_ids\[0\] must be an int, not bool"),
    (dict(n_vcpus=2, vmsa_features=1.0), r"vmsa_features must be an int, not float"),
])
def test_parameter_type_errors(kwargs, message):
    with pytest.raises(TypeError, match=message):
        GhcbMsrUnit(**kwargs)


def test_apic_ids_default_and_sev_es_features():
    unit = GhcbMsrUnit(n_vcpus=3)
    unit._MustUse__silence = True
    assert unit.apic_ids == (0, 1, 2) and unit.vmsa_features == 1
    unit = GhcbMsrUnit(n_vcpus=2, apic_ids=[7, 9], vmsa_features=0)      # SEV-ES: not checked
    unit._MustUse__silence = True
    assert unit.apic_ids == (7, 9)


def test_sev_info_is_the_reset_value():
    unit = GhcbMsrUnit(n_vcpus=1, min_version=1, max_version=2, cbit=51)
    unit._MustUse__silence = True          # inspected, not elaborated
    assert unit.sev_info() == 0x0002_0001_3300_0001
