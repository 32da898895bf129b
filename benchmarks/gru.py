"""The benchmark of ``lstm.py`` with a GRU cell (256 inputs, 256 units, batch 64): same flags, same table.

python benchmarks/gru.py [--T 1000] [--batch 64] [--hidden 256] [--repeats 5] [--png pareto.png] [--quick]
"""

import sys

import lstm

if __name__ == "__main__":
    lstm.main(sys.argv[1:], cell="gru")
