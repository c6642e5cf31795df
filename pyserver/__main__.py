from pyserver.cli.main import main

main()
