from mmesid_cli.cli.main import main

main()
