from plugbox_server.cli import main

main()
