"""zsmalloc under zmem.testing's rule-based state machine (chain sizes 8 and 4).

Every rule runs, migration included; migration picks among the pages the pool
holds now (a white-box hook reading the pool's page descriptors), so it
reaches huge pages and recycled frames instead of probing pfns at random.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from zmem import Pool
from zmem.testing import make_pool_state_machine

_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _pages(pool: Pool) -> list[int]:
    """The pfns of every zspage page the pool holds now."""
    return [pfn for pfn, z in enumerate(pool._frame_zspage) if z >= 0]


TestZsmallocChain8 = make_pool_state_machine(
    lambda: Pool(chain_size=8), name="ZsmallocChain8Machine", settings=_SETTINGS, pages=_pages)

TestZsmallocChain4 = make_pool_state_machine(
    lambda: Pool(chain_size=4), name="ZsmallocChain4Machine", settings=_SETTINGS, pages=_pages)

# Without the hook the machine probes pfns and also checks that a pfn the pool
# does not own is refused; fewer examples, it mostly repeats the above.
TestZsmallocChain8Probing = make_pool_state_machine(
    lambda: Pool(chain_size=8), name="ZsmallocChain8ProbingMachine",
    settings=settings(_SETTINGS, max_examples=25))
