"""optim: schedules with their numbers in the state equal optax's, and share one program."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxwm.engine import optim


@pytest.mark.parametrize("kind", optim.SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 1, 10, 100, 150])
@pytest.mark.parametrize("final_fraction", [0.0, 0.1])
def test_state_schedule_equals_the_optax_schedule(kind, warmup, final_fraction):
    total = 100
    ref = optim.lr_schedule(
        0.4, total, warmup_steps=warmup, kind=kind, final_fraction=final_fraction
    )
    tx = optim.scale_by_schedule_state(
        kind, 0.4, total, warmup_steps=warmup, final_fraction=final_fraction
    )
    state = tx.init(None)
    for count in [0, 1, 5, 9, 10, 11, 50, 99, 100, 101, 130]:
        got = np.float32(optim.schedule_value(kind, state._replace(count=jnp.int32(count))))
        want = np.float32(ref(jnp.int32(count)))
        if final_fraction == 0:  # what make_optimizer uses: bit-identical, op by op
            np.testing.assert_array_equal(got, want, str(count))
        else:  # optax folds peak * fraction in float64 on the host; here it is float32
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str(count))


def _toy():
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"w": jax.random.normal(k1, (3, 4)), "b": jnp.ones(4)}
    grads = jax.tree.map(lambda p: jnp.sin(p) + 0.1, params)
    return params, grads


@pytest.mark.parametrize(
    "name,ours,reference",
    [
        (
            "sgd-nesterov",
            dict(optimizer="sgd", momentum=0.9, nesterov=True),
            lambda s, mask: optax.chain(
                optax.add_decayed_weights(5e-4, mask=mask), optax.sgd(s, 0.9, nesterov=True)
            ),
        ),
        (
            "sgd-plain",
            dict(optimizer="sgd", momentum=0.0, nesterov=False),
            lambda s, mask: optax.chain(optax.add_decayed_weights(5e-4, mask=mask), optax.sgd(s)),
        ),
        (
            "adamw",
            dict(optimizer="adamw"),
            lambda s, mask: optax.adamw(s, weight_decay=5e-4, mask=mask),
        ),
    ],
)
def test_make_optimizer_matches_optax(name, ours, reference):
    params, grads = _toy()
    mask = jax.tree.map(lambda p: p.ndim > 1, params)
    sched = optim.lr_schedule(0.1, 20, warmup_steps=3, kind="cosine")
    tx = optim.make_optimizer(peak_lr=0.1, total_steps=20, warmup_steps=3, **ours)
    ref = reference(sched, mask)
    p1, s1, p2, s2 = params, tx.init(params), params, ref.init(params)
    for _ in range(6):
        u1, s1 = tx.update(grads, s1, p1)
        u2, s2 = ref.update(grads, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)


def test_runs_differing_in_schedule_numbers_compile_to_one_program():
    params, grads = _toy()
    a = optim.make_optimizer(peak_lr=0.1, total_steps=100, warmup_steps=5, schedule="linear")
    b = optim.make_optimizer(peak_lr=0.7, total_steps=3000, warmup_steps=900, schedule="linear")
    sa, sb = a.init(params), b.init(params)
    text = lambda tx, s: jax.jit(tx.update).lower(grads, s, params).as_text()  # noqa: E731
    assert text(a, sa) == text(b, sb)
    # a's update with b's state is b's update: the numbers come from the state alone.
    ua, _ = a.update(grads, sb, params)
    ub, _ = b.update(grads, sb, params)
    for x, y in zip(jax.tree.leaves(ua), jax.tree.leaves(ub), strict=True):
        np.testing.assert_array_equal(x, y)


def test_bad_schedule_and_optimizer_are_refused():
    with pytest.raises(ValueError, match="schedule kind"):
        optim.make_optimizer(peak_lr=0.1, total_steps=10, schedule="step")
    with pytest.raises(ValueError, match="optimizer must be"):
        optim.make_optimizer(peak_lr=0.1, total_steps=10, optimizer="lamb")
    with pytest.raises(ValueError, match="total_steps"):
        optim.scale_by_schedule_state("cosine", 0.1, 0)
