from plugbox_client.cli import main

main()
