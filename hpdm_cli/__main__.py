from hpdm_cli.app import main

main()
