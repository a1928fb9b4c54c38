import cProfile, pstats, io, time
from tests.inprocess.test_calc_modes_engine import objs, oracle_cosine_stats, test_every_weight_equals_oracle, test_cosine_statistic_is_cached  # noqa

def _p(label, fn):
    pr = cProfile.Profile(); t = time.perf_counter()
    pr.enable(); fn(); pr.disable()
    print("\n####", label, time.perf_counter() - t)
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(30); print(s.getvalue()[:6000])

def test_prof(objs, oracle_cosine_stats):
    _p("cache", lambda: test_cosine_statistic_is_cached(objs))
    _p("cosineA", lambda: test_every_weight_equals_oracle(objs, oracle_cosine_stats, "cosineA"))
    _p("cosineB", lambda: test_every_weight_equals_oracle(objs, oracle_cosine_stats, "cosineB"))
