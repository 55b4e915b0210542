"""What a notification is, independent of where it is stored or carried: the message on the queues
and the status machine."""
