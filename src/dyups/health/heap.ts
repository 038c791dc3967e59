/** @noSelfInFile */
// A binary min-heap of targets by due time (the prober's schedule). O(log n) push and pop. Pure.
import { Target } from "./targets";

export interface Heap {
    items: LuaTable<number, Target>;
    size: number;
}

export function newHeap(): Heap {
    return { items: new LuaTable(), size: 0 };
}

export function heapPush(h: Heap, t: Target): void {
    const items = h.items;
    let i = h.size + 1;
    h.size = i;
    const due = t.due;
    while (i > 1) {
        const parent = math.floor(i / 2);
        const p = items.get(parent);
        if (p.due <= due) break;
        items.set(i, p);
        i = parent;
    }
    items.set(i, t);
}

export function heapTop(h: Heap): Target | undefined {
    return h.size > 0 ? h.items.get(1) : undefined;
}

export function heapPop(h: Heap): Target | undefined {
    const n = h.size;
    if (n === 0) return undefined;
    const items = h.items;
    const top = items.get(1);
    const last = items.get(n);
    items.delete(n);
    h.size = n - 1;
    if (n > 1) {
        const m = n - 1;
        let i = 1;
        const due = last.due;
        for (;;) {
            let c = i * 2;
            if (c > m) break;
            if (c < m && items.get(c + 1).due < items.get(c).due) c = c + 1;
            if (items.get(c).due >= due) break;
            items.set(i, items.get(c));
            i = c;
        }
        items.set(i, last);
    }
    return top;
}
