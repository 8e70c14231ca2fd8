import sys

from scorer.codabench import main

sys.exit(main(sys.argv[1:]))
