"""Record every batch a simulate run selects: python capture_picks.py ITEMS OUTDIR PICKS.json"""
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
from mmal.loop.simulate import simulate
res = simulate(items, ["entropy", "badge", "lsb-knn"], init=50, budget=50, rounds=3, seeds=[0, 1], out=out,
               learner="late-fusion", progress=False, log=lambda *a: None)
json.dump(rec, open(dest, "w"), indent=0)
print(len(rec), "batches;", S.__file__)
