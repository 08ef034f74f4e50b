"""Hard caps of the traffic generator.

mpmlab is a load tool pointed at the user's own machine. These caps are deliberately not
parameters: a typo in a form ("rate=1e9", "clients=2000000") must not turn into a flood. Every
pattern parameter is validated against them, and the runner enforces them again at run time.
"""

from __future__ import annotations

#: Open client connections across all running patterns of one runner. Each one is a file
#: descriptor in the runner and a socket on the server; 20k fits a default-ish RLIMIT_NOFILE of
#: 20000 on the hard side and stays far below what a laptop kernel tolerates.
MAX_CONNECTIONS = 20_000

#: Requests (arrivals) per second across all patterns of one runner. Above this a single Python
#: process cannot keep the schedule anyway; the run-time governor delays requests beyond it.
MAX_RATE = 50_000

#: Requests one pattern may send in its whole life; it stops by itself at this count.
MAX_TOTAL_REQUESTS = 10_000_000

#: Seconds one pattern may run; it stops by itself at its duration, which cannot exceed this.
MAX_DURATION = 3_600.0

#: Patterns running at once in one runner.
MAX_PATTERNS = 32

#: Largest Content-Length slow-post will announce, and largest /bytes/N slow-read will ask for.
MAX_BODY_BYTES = 1 << 30

#: Longest per-request timeout (connect, and response after the request is sent).
MAX_TIMEOUT = 600.0

#: Connections being set up at the same moment (TCP + TLS handshakes). Ramping 10k slowloris
#: clients through a bounded window keeps the server's listen backlog from overflowing, which
#: would otherwise turn into SYN retransmits and one-second connect stalls.
MAX_PARALLEL_CONNECTS = 256

#: How often the runner publishes a stats frame (seconds).
FRAME_INTERVAL = 0.25

#: Finished patterns kept for list()/summary after they end.
FINISHED_HISTORY = 64

#: Latency histogram range: 1 microsecond .. MAX_TIMEOUT, 3 significant figures.
HIST_LOWEST_US = 1
HIST_HIGHEST_US = int(MAX_TIMEOUT * 1_000_000)
HIST_SIGNIFICANT_FIGURES = 3
