"""A classroom on one server: N fresh browser sessions open Home while a model trains.

One Streamlit server (app.py, on synthetic fixture tiles, offline, 127.0.0.1 only) and one
training of the notebook default config in a worker process started through bharateo.app.jobs (the
same worker, priority and threads the app's Train button gets), with two more trainings waiting
in its queue. Phases, back to back in one process:
  solo   the training alone for --phase-s seconds,
  load   rounds of N fresh Chromium sessions (playwright, each its own browser context) opening
         Home at once, each timed from navigation to the drawn page (title, token calculator and
         no running script), until --phase-s has passed (at least one round); meanwhile
         /_stcore/health is polled every 0.25 s,
  solo   the training alone again.
Prints p50/p95 time to a drawn Home (first round and all rounds), health-check latency, the
training's chips/s in each phase and loaded vs solo, the peak sum of RSS of every process this
bench started (server, worker, browser, itself), and the processor.
Targets on 2 cores: p95 Home under 5 s with 10 sessions, training keeps >= 70 % of solo speed.
Here the N browsers run on the same cores as the server and the training (in class they run on
the students' devices), so the CPU seconds each role used during the load are printed too: the
server's share per session is what a classroom server itself pays.
Everything is bounded: each page load times out after 120 s, the whole load phase after 10 min.

usage: python bench/classroom_load.py [--sessions 10] [--phase-s 20]
       BHARATEO_WORKER_THREADS / BHARATEO_WORKER_NICE set the worker's threads / niceness
       (e.g. 2 / 0 for the settings before issue 11).
"""
import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import fixture_lab  # noqa: E402

import subprocess  # noqa: E402

from tests.browser import CHROMIUM, CHROMIUM_ARGS, MAIN, REPO as APP_ROOT, StreamlitServer  # noqa: E402

class SameSessionServer(StreamlitServer):
    """The test helper's server, but in this bench's session (its own process group only): with
    the kernel's autogroup scheduling, niceness only ranks processes of one session, and in class
    the server and the worker it starts share one."""

    def start(self) -> "SameSessionServer":
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(self.port),
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=APP_ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, process_group=0)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self


HOME_DRAWN = 'h3:has-text("Token accounting calculator")'
LOAD_TIMEOUT_S = 120.0
LOAD_PHASE_LIMIT_S = 600.0


def processor() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "unknown")
    return f"{model}, {len(os.sched_getaffinity(0))} cores available"


def process_tree(root: int) -> dict[int, dict]:
    """`root` and all its descendants: pid -> {"name", "rss" (bytes), "cpu" (s, with children
    already waited for)}."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            procs[int(entry.name)] = {
                "parent": int(fields[1]), "name": stat[stat.index("(") + 1:stat.rindex(")")],
                "rss": int(fields[21]) * os.sysconf("SC_PAGE_SIZE"),
                "cpu": sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")}
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p, info in procs.items() if info["parent"] == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return {p: procs[p] for p in tree if p in procs}


def rss_of_tree(root: int) -> int:
    """Sum of resident memory (bytes) of `root` and all its descendants."""
    return sum(info["rss"] for info in process_tree(root).values())


def cpu_by_role(server_pid: int, worker_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the server process, the training worker, the browser, the rest."""
    roles = dict.fromkeys(("server", "training", "browser", "other"), 0.0)
    for pid, info in process_tree(os.getpid()).items():
        role = ("server" if pid == server_pid else "training" if pid == worker_pid
                else "browser" if "chrom" in info["name"].lower() else "other")
        roles[role] += info["cpu"]
    return roles


class Sampler(threading.Thread):
    """Polls the health endpoint every 0.25 s and the memory every 0.5 s until stopped."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.health, self.peak_rss, self.failures = url, [], 0, 0
        self.recording = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        last_rss = 0.0
        while not self.done.is_set():
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=30) as r:
                    r.read()
                if self.recording.is_set():
                    self.health.append(time.perf_counter() - start)
            except OSError:
                self.failures += 1
            if time.monotonic() - last_rss > 0.5:
                last_rss = time.monotonic()
                self.peak_rss = max(self.peak_rss, rss_of_tree(os.getpid()))
            self.done.wait(0.25)


async def open_home(browser, url: str) -> float:
    """Seconds from navigation to a drawn Home page in a fresh browser context."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = await context.new_page()
        await page.route("**/*", lambda route: route.continue_()
                         if route.request.url.startswith(url) else route.abort())
        start = time.perf_counter()
        await page.goto(url, timeout=LOAD_TIMEOUT_S * 1000)
        await page.wait_for_selector(f"{MAIN} {HOME_DRAWN}", timeout=LOAD_TIMEOUT_S * 1000)
        await page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached",
                                     timeout=LOAD_TIMEOUT_S * 1000)
        return time.perf_counter() - start
    finally:
        await context.close()


async def load_rounds(url: str, sessions: int, phase_s: float, server_pid: int,
                      worker_pid: int) -> tuple[list[list[float]], dict[str, float]]:
    """Rounds of `sessions` fresh sessions opening Home at once (see the module docstring), and
    the CPU seconds each role used during them (the browser's own start-up left out)."""
    from playwright.async_api import async_playwright

    rounds = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            await open_home(browser, url)  # the browser's own start-up is not a session's wait
            cpu_before, start = cpu_by_role(server_pid, worker_pid), time.monotonic()
            while not rounds or (time.monotonic() - start < phase_s
                                 and time.monotonic() - start < LOAD_PHASE_LIMIT_S):
                rounds.append(list(await asyncio.gather(
                    *(open_home(browser, url) for _ in range(sessions)))))
            cpu_after = cpu_by_role(server_pid, worker_pid)
        finally:
            await browser.close()
    return rounds, {k: cpu_after[k] - cpu_before[k] for k in cpu_after}


def chips_trained(job) -> int:
    with job._lock:
        return len(job.steps) * job.config.train.batch_size


def measure_solo(job, seconds: float) -> float:
    start_chips, start = chips_trained(job), time.perf_counter()
    time.sleep(seconds)
    return (chips_trained(job) - start_chips) / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--phase-s", type=float, default=20.0)
    args = parser.parse_args()
    if not 1 <= args.sessions <= 50:
        parser.error("--sessions must be 1 to 50")

    os.environ["BHARATEO_MAX_TRAININGS"] = "1"
    tmp = fixture_lab(Path(tempfile.mkdtemp(prefix="classroom_load_")))

    from bharateo.app import jobs
    from bharateo.pipeline import PRESETS, RunConfig, load_rois
    from bharateo.train import TrainConfig
    from bharateo.app.worker import WORKER_NICE, spare_worker_ready, worker_threads

    nb = PRESETS["notebook default"]
    config = RunConfig(rois=nb.rois, chips=nb.chips, model=nb.model,
                       train=TrainConfig(**{**nb.train.to_dict(), "epochs": 10_000}))
    rois = load_rois(config.rois)
    queue = jobs.TrainingQueue()

    with SameSessionServer(dict(os.environ), tmp / "server.log") as server:
        sampler = Sampler(server.url)
        sampler.start()
        jobs.keep_spare_worker()
        spare_worker_ready(60)
        training = jobs.TrainingJob(config, rois, "load-train", queue=queue).start()
        waiting = [jobs.TrainingJob(config, rois, f"load-wait-{i}", queue=queue).start()
                   for i in range(2)]
        deadline = time.monotonic() + 120
        while len(training.snapshot()["steps"]) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            if training.status != "running":
                raise SystemExit(f"the training did not start: {training.status} {training.error}")
            solo_before = measure_solo(training, args.phase_s)
            sampler.recording.set()
            start_chips, start = chips_trained(training), time.perf_counter()
            rounds, cpu_load = asyncio.run(load_rounds(server.url, args.sessions, args.phase_s,
                                                       server.proc.pid, training.worker.process.pid))
            loaded = (chips_trained(training) - start_chips) / (time.perf_counter() - start)
            load_s = time.perf_counter() - start
            sampler.recording.clear()
            solo_after = measure_solo(training, args.phase_s)
        finally:
            for job in (*waiting, training):
                job.stop()
            for job in (*waiting, training):
                job.join(120)
            sampler.done.set()
            sampler.join(40)

    first, every = rounds[0], [t for r in rounds for t in r]
    solo = (solo_before + solo_after) / 2
    health = sampler.health or [float("nan")]
    print(f"processor: {processor()}")
    print(f"training worker: {worker_threads()} torch thread(s), nice "
          f"{os.environ.get('BHARATEO_WORKER_NICE', WORKER_NICE)}; notebook default config; "
          f"2 more trainings queued")
    print(f"Home drawn, first round of {args.sessions} fresh sessions at once: "
          f"p50 {statistics.median(first):.2f} s, p95 {percentile(first, 0.95):.2f} s, "
          f"max {max(first):.2f} s   (target p95 < 5 s)")
    print(f"Home drawn, all {len(rounds)} round(s), {len(every)} loads: "
          f"p50 {statistics.median(every):.2f} s, p95 {percentile(every, 0.95):.2f} s")
    print(f"health check during the load: p50 {statistics.median(health) * 1000:.0f} ms, "
          f"p95 {percentile(health, 0.95) * 1000:.0f} ms, max {max(health) * 1000:.0f} ms "
          f"({len(sampler.health)} checks, {sampler.failures} failed)")
    print(f"training chips/s: solo {solo_before:.0f} before, {solo_after:.0f} after; "
          f"under load {loaded:.0f} = {loaded / solo:.0%} of solo   (target >= 70 %)")
    loads = sum(len(r) for r in rounds)
    print(f"CPU seconds during the load phase ({load_s:.0f} s wall, {loads} sessions): server "
          f"{cpu_load['server']:.1f} ({cpu_load['server'] / loads:.2f} per session), browsers "
          f"{cpu_load['browser']:.1f}, training {cpu_load['training']:.1f}, "
          f"bench and others {cpu_load['other']:.1f}")
    print(f"peak memory, sum of RSS of every process of this bench: "
          f"{sampler.peak_rss / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
