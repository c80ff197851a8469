"""A test double of ``python -m tf_impl.train``: the same command line, sleeping DELAY seconds after
every step, so that a test can kill or interrupt the run mid-way.

    python tests/slow_train.py DELAY [options of tf_impl.train]
"""

import sys
import time

from tf_impl.train import main

if __name__ == "__main__":
    delay = float(sys.argv[1])
    sys.exit(main(sys.argv[2:], on_step=lambda step: time.sleep(delay)))
