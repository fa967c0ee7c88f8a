import torch

from dfq_deploy.quant import QuantScheme, quantize_model
from dfq_deploy.recipes import DMKDConfig, GDFQConfig, train_dmkd, train_gdfq


def _warmups(cache):
    return [k for k in cache if k[0] != "zeroq-calib"]


def test_warmup_cache_restores_exactly_and_is_keyed_by_settings(tiny_teacher):
    cfg = GDFQConfig(steps=5, warmup_steps=8, batch_size=16, log_every=1)
    fresh = quantize_model(tiny_teacher, QuantScheme(4, 4))
    h_fresh = train_gdfq(tiny_teacher, fresh, cfg, (1, 28, 28), 10, progress=False)
    cache: dict = {}
    a = quantize_model(tiny_teacher, QuantScheme(4, 4))
    train_gdfq(tiny_teacher, a, cfg, (1, 28, 28), 10, progress=False, warmup_cache=cache)
    assert len(_warmups(cache)) == 1
    b = quantize_model(tiny_teacher, QuantScheme(4, 4))
    h_b = train_gdfq(tiny_teacher, b, cfg, (1, 28, 28), 10, progress=False, warmup_cache=cache)
    assert len(_warmups(cache)) == 1  # hit
    assert [h["kd"] for h in h_b if h["phase"] == "kd"] == [h["kd"] for h in h_fresh if h["phase"] == "kd"]
    for (k, v), v2 in zip(fresh.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, v2), k
    # DMKD shares GDFQ's generator loss, so it reuses the warm-up; other settings make a new entry
    train_dmkd(tiny_teacher, quantize_model(tiny_teacher, QuantScheme(4, 4)),
               DMKDConfig(steps=2, warmup_steps=8, batch_size=16, log_every=1), (1, 28, 28), 10, progress=False,
               warmup_cache=cache)
    assert len(_warmups(cache)) == 1
    train_gdfq(tiny_teacher, quantize_model(tiny_teacher, QuantScheme(4, 4)),
               GDFQConfig(steps=2, warmup_steps=9, batch_size=16, log_every=1), (1, 28, 28), 10, progress=False,
               warmup_cache=cache)
    assert len(_warmups(cache)) == 2


def test_amp_changes_nothing_on_the_cpu(tiny_teacher):
    """bfloat16 autocast applies to CUDA only: on the CPU the option leaves every bit as it was."""
    states = []
    for amp in (False, True):
        s = quantize_model(tiny_teacher, QuantScheme(4, 4))
        train_gdfq(tiny_teacher, s, GDFQConfig(steps=3, warmup_steps=3, batch_size=16, calib_batches=1,
                                               calib_steps=2, amp=amp), (1, 28, 28), 10, progress=False)
        states.append(s.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_the_timer_hook_wraps_every_generator_step_by_phase(tiny_teacher):
    import contextlib

    seen: list[str] = []

    @contextlib.contextmanager
    def timer(phase):
        seen.append(phase + " in")
        yield
        seen.append(phase + " out")

    cfg = GDFQConfig(steps=3, warmup_steps=2, batch_size=16, log_every=1, calib_source="noise")
    train_gdfq(tiny_teacher, quantize_model(tiny_teacher, QuantScheme(4, 4)), cfg, (1, 28, 28), 10, progress=False,
               timer=timer)
    assert seen == ["warmup in", "warmup out"] * 2 + ["joint in", "joint out"] * 3
