from reelscope.cli.main import main

main()
