"""memjax: memory-efficient backpropagation through time for JAX."""
from memjax._schedule import Op, Schedule, ScheduleError, simulate
from memjax._solver import KINDS, Policy, hsm_cost, min_memory, solve
from memjax._scan import ScanPlan, plan_scan, scan
