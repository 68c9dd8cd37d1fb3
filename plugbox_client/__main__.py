from plugbox_client.main import main

main()
