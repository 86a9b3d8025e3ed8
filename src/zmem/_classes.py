"""zsmalloc's size-class geometry: class sizes, pages per zspage, merging, huge_class_size.

Everything here is a pure function of (PAGE_SIZE, chain size, OBJ_INDEX_BITS), as
in ``zs_create_pool`` of Linux 6.3+:

* class ``i`` has size ``ZS_MIN_ALLOC_SIZE + i * ZS_SIZE_CLASS_DELTA`` (capped
  at PAGE_SIZE); 255 logical classes on 4 KiB pages;
* pages per zspage is the chain length 1..chain_size with the least tail waste
  (strictly less, so ties keep the shorter chain); powers of two use 1 page
  (``calculate_zspage_chain_size``);
* classes are built from the largest down and a class with the same
  (pages_per_zspage, objs_per_zspage) as the last one *created* is not created:
  its index aliases that larger class (``can_merge``);
* ``huge_class_size`` is the largest normal class minus ``ZS_HANDLE_SIZE - 1``:
  a payload of that many bytes or more lands in the single huge class.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PAGE_SIZE",
    "ZS_HANDLE_SIZE",
    "ZS_ALIGN",
    "SizeClassInfo",
    "Geometry",
    "zspage_chain_size",
]

PAGE_SIZE = 4096
#: One machine word: the handle stored in front of every non-huge object.
ZS_HANDLE_SIZE = 8
#: Objects are aligned to this; a free-list link (one word) never spans two pages.
ZS_ALIGN = 8
#: The zspage's class field is 9 bits wide; CLASS_BITS = 8 sets the class step.
CLASS_BITS = 8
#: 64-bit x86: 52 physical address bits - PAGE_SHIFT 12 = 40 pfn bits, 24 left.
OBJ_INDEX_BITS = 24


def zspage_chain_size(size: int, chain_size: int, page_size: int = PAGE_SIZE) -> int:
    """Pages per zspage for a class of ``size`` bytes (``calculate_zspage_chain_size``)."""
    if size & (size - 1) == 0:
        return 1
    best_waste = None
    best = 1
    for k in range(1, chain_size + 1):
        waste = (k * page_size) % size
        if best_waste is None or waste < best_waste:
            best_waste, best = waste, k
    return best


@dataclass(frozen=True, slots=True)
class SizeClassInfo:
    """One distinct (non-alias) size class."""

    index: int
    """Logical class index, 0..ZS_SIZE_CLASSES-1."""
    size: int
    """Slot size in bytes, handle header included."""
    pages_per_zspage: int
    objs_per_zspage: int

    @property
    def huge(self) -> bool:
        """One object in one page: stored without a header (the huge class)."""
        return self.pages_per_zspage == 1 and self.objs_per_zspage == 1


class Geometry:
    """The class table of one pool configuration.

    ``classes`` lists the distinct classes in ascending index order;
    ``class_of_index[i]`` resolves any logical index (merged ones included) to
    its distinct class.
    """

    def __init__(
        self,
        chain_size: int = 8,
        page_size: int = PAGE_SIZE,
        obj_index_bits: int = OBJ_INDEX_BITS,
    ) -> None:
        if not 1 <= chain_size <= 16:
            raise ValueError(f"chain_size must be 1..16, got {chain_size}")
        if page_size < 4096 or page_size & (page_size - 1):
            raise ValueError(f"page_size must be a power of two >= 4096, got {page_size}")
        self.chain_size = chain_size
        self.page_size = page_size
        self.obj_index_bits = obj_index_bits
        self.min_alloc_size = max(32, (chain_size * page_size) >> obj_index_bits)
        self.max_alloc_size = page_size
        self.class_delta = page_size >> CLASS_BITS
        self.nr_classes = -(-(page_size - self.min_alloc_size) // self.class_delta) + 1

        distinct: list[SizeClassInfo] = []
        class_of_index: list[SizeClassInfo | None] = [None] * self.nr_classes
        huge_class_size = 0
        prev: SizeClassInfo | None = None
        # Largest first, so a merged class always resolves to a larger-or-equal size.
        for i in range(self.nr_classes - 1, -1, -1):
            size = min(self.min_alloc_size + i * self.class_delta, page_size)
            pages = zspage_chain_size(size, chain_size, page_size)
            objs = pages * page_size // size
            if pages != 1 and objs != 1 and not huge_class_size:
                # zs_malloc adds the header before the lookup, so a payload of
                # size - 7 bytes already needs the next (huge) class.
                huge_class_size = size - (ZS_HANDLE_SIZE - 1)
            if prev is not None and (prev.pages_per_zspage, prev.objs_per_zspage) == (pages, objs):
                class_of_index[i] = prev
                continue
            prev = SizeClassInfo(i, size, pages, objs)
            distinct.append(prev)
            class_of_index[i] = prev
        distinct.reverse()
        self.classes: tuple[SizeClassInfo, ...] = tuple(distinct)
        self.class_of_index: tuple[SizeClassInfo, ...] = tuple(class_of_index)  # type: ignore[arg-type]
        self.huge_class_size = huge_class_size

    def class_index(self, slot_size: int) -> int:
        """Logical class index for a slot of ``slot_size`` bytes (header included)."""
        if slot_size <= self.min_alloc_size:
            return 0
        idx = -(-(slot_size - self.min_alloc_size) // self.class_delta)
        return min(idx, self.nr_classes - 1)

    def class_for_payload(self, size: int) -> SizeClassInfo:
        """The distinct class ``zs_malloc(size)`` uses (the header is added here)."""
        return self.class_of_index[self.class_index(size + ZS_HANDLE_SIZE)]

    def lookup_class_index(self, size: int) -> int:
        """``zs_lookup_class_index``: resolved index for ``size`` with no header added."""
        return self.class_of_index[self.class_index(size)].index

    def first_obj_offset(self, cls: SizeClassInfo, page: int) -> int:
        """In-page offset of the first object starting in page ``page`` of a zspage."""
        start = page * self.page_size
        return -(-start // cls.size) * cls.size - start
