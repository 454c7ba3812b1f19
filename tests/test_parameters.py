"""Constructors reject bad parameters with messages that name the field and the value."""

import gc
import warnings

import pytest

from apwake.rtl.lib.instance import SeparateModule
from apwake.rtl.lapic import ApicFabric, LocalApic
from apwake.rtl.lapic.cluster import ApicCluster
from apwake.rtl.lapic.layouts import Icr
from apwake.rtl.lapic.receiver import Receiver
from apwake.rtl.lapic.local_apic import local_apic_signature
from apwake.rtl.lib.priority import RoundRobinArbiter
from apwake.rtl.lapic.signatures import TraceSignature
from apwake.sim.harness.codec import pack, unpack
from apwake.sim.vip.lapic.design import FabricConfig


@pytest.fixture(autouse=True)
def _rejected_objects_are_not_unused():
    """Objects whose constructor raised on purpose are never elaborated; collect them here so
    Amaranth's never-used warning does not surface in a later test."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*created but never used")
        yield
        gc.collect()


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(apic_ids=[]), ValueError, r"apic_ids must list 1 to 4096 APIC IDs"),
    (dict(apic_ids=list(range(4097))), ValueError, r"apic_ids must list 1 to 4096"),
    (dict(apic_ids=[0, "1"]), TypeError, r"apic_ids\[1\] must be an integer, not '1'"),
    (dict(apic_ids=[0, 0xFFFF_FFFF]), ValueError, r"apic_ids\[1\] = 0xffffffff is not an x2APIC ID"),
    (dict(apic_ids=[0, -1]), ValueError, r"apic_ids\[1\] = -0x1 is not an x2APIC ID"),
    (dict(apic_ids=[4, 5, 4]), ValueError, r"apic_ids\[2\] = 0x4 repeats apic_ids\[0\]"),
    (dict(apic_ids=[0, 1], bsp_index=2), ValueError, r"bsp_index must be a port index from 0 to 1, not 2"),
    (dict(apic_ids=[0], n_vectors=100), ValueError, r"n_vectors must be one of \(32, 64, 128, 256\), not 100"),
    (dict(apic_ids=[0, 1], cluster_size=0), ValueError,
     r"cluster_size must be an integer from 1 to 2 \(the number of CPUs, at most 256\), not 0"),
    (dict(apic_ids=[0, 1], cluster_size=3), ValueError, r"cluster_size must be an integer from 1 to 2 .* not 3"),
    (dict(apic_ids=list(range(300)), cluster_size=300), ValueError, r"from 1 to 256 .* not 300"),
    (dict(apic_ids=[0, 1], apic_factory=LocalApic, cluster_factory=ApicCluster), ValueError,
     r"give apic_factory or cluster_factory, not both"),
    (dict(apic_ids=[0, 1], storage="bram"), ValueError, r"storage must be one of \('flops', 'ram'\), not 'bram'"),
    (dict(apic_ids=[0, 0x100], x2apic_support=False), ValueError,
     r"apic_ids\[1\] = 0x100 needs x2APIC mode \(above 0xfe\), which x2apic_support=False leaves out"),
    (dict(apic_ids=[0], x2apic_support=0), TypeError, r"x2apic_support must be a bool, not 0"),
])
def test_fabric_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        ApicFabric(**kwargs)


def test_x2apic_ids_are_taken():
    """32-bit IDs (0xFF is an x2APIC ID too: only 0xFFFF_FFFF is the broadcast)."""
    fabric = ApicFabric([0, 0xFF, 0x100, 0xFFFF_FFFE])
    assert fabric.apic_ids == (0, 0xFF, 0x100, 0xFFFF_FFFE)


def test_duplicate_ids_allowed_on_request():
    fabric = ApicFabric([3, 3], allow_duplicate_ids=True)
    assert fabric.n_cpus == 2 and fabric.apic_ids == (3, 3)


def test_local_apic_parameters():
    with pytest.raises(ValueError, match=r"n_vectors must be one of .* not 48"):
        LocalApic(n_vectors=48)


def test_fabric_config():
    with pytest.raises(ValueError, match=r"n_cpus must be a positive integer, not 0"):
        FabricConfig.contiguous(0)
    with pytest.raises(ValueError, match=r"n_vectors must be one of"):
        FabricConfig((0, 1), n_vectors=12)
    config = FabricConfig((0x10, 0x03), n_vectors=64, bsp_index=1)
    assert FabricConfig.from_json(config.to_json()) == config
    assert config.label == "n2-sparse-v64-bsp1"
    assert FabricConfig.contiguous(8, cluster_size=3).label == "n8-c3"
    for bad in (-1, 9, True, 2.0):
        with pytest.raises(ValueError, match=rf"cluster_size must be 0 \(the harness's choice\) or an "
                                             rf"integer from 1 to 8 .*not {bad!r}"):
            FabricConfig.contiguous(8, cluster_size=bad)


def test_other_parameters():
    with pytest.raises(ValueError, match=r"RoundRobinArbiter n must be an integer from 1 to 4096, not 0"):
        RoundRobinArbiter(0)
    with pytest.raises(TypeError, match=r"n_ports must be a positive integer, not 0"):
        TraceSignature(n_ports=0)
    with pytest.raises(ValueError, match=r"module_name must be a Verilog identifier, not 'a b'"):
        SeparateModule(local_apic_signature(), "a b")


def test_codec_round_trip_and_errors():
    value = pack(Icr, vector=0x9A, delivery_mode=6, destination=0x0300_0000)
    assert value == 0x0300_0000_0000_069A
    fields = unpack(Icr, value)
    assert fields["vector"] == 0x9A and fields["delivery_mode"].name == "STARTUP"
    with pytest.raises(ValueError, match=r"field vector = 256 does not fit in 8 bits"):
        pack(Icr, vector=256)
    with pytest.raises(ValueError, match=r"'vectr' is not a field"):
        pack(Icr, vectr=1)


@pytest.mark.parametrize("make", [lambda: LocalApic(storage="block"), lambda: ApicCluster(2, storage="block"),
                                  lambda: FabricConfig.contiguous(2, storage="block")])
def test_apic_storage_is_checked_where_it_is_given(make):
    with pytest.raises(ValueError, match=r"storage must be one of \('flops', 'ram'\), not 'block'"):
        make()


@pytest.mark.parametrize("make, error, message", [
    (lambda: FabricConfig((0, 0x1FF), x2apic_support=False), ValueError,
     r"apic_ids\[1\] = 0x1ff needs x2APIC mode \(above 0xfe\), which x2apic_support=False leaves out"),
    (lambda: FabricConfig.contiguous(2, x2apic_support="no"), TypeError, r"x2apic_support must be a bool, not 'no'"),
    (lambda: LocalApic(x2apic_support=None), TypeError, r"x2apic_support must be a bool, not None"),
    (lambda: LocalApic(pipelined=2), TypeError, r"pipelined must be a bool, not 2"),
    (lambda: ApicCluster(2, pipelined="yes"), TypeError, r"pipelined must be a bool, not 'yes'"),
    (lambda: FabricConfig.contiguous(2, pipelined=None), TypeError, r"pipelined must be a bool, not None"),
    (lambda: Receiver(n_vectors=32, delay=1), ValueError, r"delay must be one of \(0, 3\), not 1"),
])
def test_x2apic_support_and_pipelining_are_checked_where_given(make, error, message):
    """The simulation's configuration refuses what the fabric would, before any build."""
    with pytest.raises(error, match=message):
        make()
