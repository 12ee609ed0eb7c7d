from mlguard.cli import main

main()
