import os
import sys

sys.path.append(os.environ["PIPE_IMPL_DIR"])
