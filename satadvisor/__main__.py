import sys

try:  # a Ctrl-C while the command line loads: the same line and exit code as one later
    from satadvisor.cli import main
except KeyboardInterrupt:
    sys.stderr.write("satadvisor: interrupted\n")
    sys.exit(130)

main()
