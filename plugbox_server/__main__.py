from plugbox_server.main import main

main()
