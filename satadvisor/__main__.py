from satadvisor.cli import main

main()
