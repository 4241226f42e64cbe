"""What BENCHMARKS.md keeps under "Fixed after profiling": targets missed once, profiled and fixed, each
with its before and after."""

HISTORY = [
    "2026-11-26, solution comparison page, 4.1 s -> 2.4 s in the browser: the equity-curve figure was built "
    "from timezone-aware timestamps (0.76 s to build and 0.49 s to serialise on the server, measured with "
    "time.perf_counter around plots.equity_curves and Figure.to_json; with datetime64 values 0.22 s and "
    "0.03 s) and drawn as WebGL traces, which headless chromium without a GPU renders in software; now SVG "
    "traces of at most 1,000 points each. The logit-analysis page went from 2.7 s to 1.9 s with the same "
    "change.",
    "2026-11-26, local worker pools (retraining CPCV, batch inference, demo training): every spawned worker "
    "imported torch and peft again, 5.0 s per pool of 2 on this machine (python -X importtime: peft 2.8 s, "
    "torch about 1.9 s); a 2-worker batch inference of the quick demo took 20.3 s against 9.0 s in process. "
    "Workers are now forked from a forkserver that imports them once: an empty pool of 2 takes 3.9 s the "
    "first time and 0.04 s after that.",
    "2026-12-02, full reloads of the charted pages: a Chrome trace of a Solution comparison reload "
    "(2.1 s) showed 0.5 s in plotly.js and most of the rest in React and layout, and leaving out one part "
    "at a time (6 reloads each) gave the equity chart about 0.5 s, the two sweep charts 0.4 s and three "
    "tables 0.4 s, drawn whether a reviewer scrolls to them or not. Those pages now draw one tab at a "
    "time (stateful st.tabs: only the open tab runs; the tab is in the URL), and Model health draws its "
    "two JSON views once their expander opens. Medians of 4-6 reloads on the full demo, before -> after: "
    "Solution comparison 2.1-2.3 s -> 1.1-1.3 s, Logit analysis 1.6 s -> 0.9 s, HIFA criteria 1.4 s -> "
    "1.2 s, Model health 1.5 s -> 1.0 s.",
    "2026-12-02, int8 inference of the team's model: the full-size evaluate's workers spent about a quarter "
    "of their CPU time in the kernel (74% user, 26% system per thread), on minor page faults: glibc's malloc "
    "handed each batch's activations (12.6 MB blocks) back to the kernel, so each batch drew fresh pages. "
    "Inference now keeps freed blocks under 32 MB for reuse (models/malloc.py, mallopt once per process; the "
    "same bits). The full-size int8 evaluate went from 328 s to 268 s (test inference 249 s -> 188 s, 36 -> "
    "49 full windows/s), one run each, one after the other.",
    "2026-12-02, int8 inference again: the benchmark's full-size evaluate still spent 53 s in the kernel "
    "(22 million faults) and took 282 s where an earlier run had taken 268 s. Faults per stage varied from "
    "run to run (0.5-3.2 million per 800 int8 windows at the same settings): glibc gives each worker thread "
    "an arena of 64 MB heaps and unmaps a heap once it is empty, whatever the trim threshold, and a batch's "
    "activations come close to 64 MB. The flagcore command now sets one arena for every thread before any "
    "thread starts (mallopt M_ARENA_MAX=1): 0.10-0.15 million faults per 800 windows in each of 3 runs; "
    "the full-size evaluate 264 s with 7.6 s in the kernel and 2.7 million faults, most of them the fp32 "
    "agreement sample's (one run).",
]
