from mlp_cli.cli import main

main()
