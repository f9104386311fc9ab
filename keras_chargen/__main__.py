import sys

from keras_chargen.cli import main

sys.exit(main())
