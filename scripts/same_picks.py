"""Record every batch a simulate run selects, to check that a refactor keeps the picks bit-identical.

    PYTHONPATH=OLD_CHECKOUT/src .venv/bin/python scripts/same_picks.py ITEMS OUT_OLD picks_old.json
    PYTHONPATH=src              .venv/bin/python scripts/same_picks.py ITEMS OUT_NEW picks_new.json
    python -c "import json; a, b = (json.load(open(f)) for f in ('picks_old.json', 'picks_new.json')); print(a == b)"

Runs ``entropy``, ``badge`` and ``lsb-knn`` with the ``late-fusion`` learner, seeds 0 and 1,
50 initial labels + 3 rounds of 50, and writes every batch (strategy, seed, ids in order).
Short batches are left short (``top_up=None`` where simulate has it): the top-up of a short
``lsb-knn`` batch (simulate's default ``top_up="random"``) is a further ``random`` batch and
changes the later rounds, so it would make a checkout with it differ from one without for
a reason that is no refactor.
"""
import json, sys
import mmal.select as S
items, out, dest = sys.argv[1:4]
rec = []
orig = S.select
def wrapped(spec, pool, budget, **kw):
    sel = orig(spec, pool, budget, **kw)
    rec.append({"spec": spec, "seed": kw.get("seed"), "ids": [str(i) for i in sel.ids]})
    return sel
S.select = wrapped
import inspect
from mmal.loop.simulate import simulate
same = {"top_up": None} if "top_up" in inspect.signature(simulate).parameters else {}
res = simulate(items, ["entropy", "badge", "lsb-knn"], init=50, budget=50, rounds=3, seeds=[0, 1], out=out,
               learner="late-fusion", progress=False, log=lambda *a: None, **same)
json.dump(rec, open(dest, "w"), indent=0)
print(len(rec), "batches;", S.__file__)
