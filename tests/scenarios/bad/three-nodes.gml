graph [
  directed 0
  node [ id 0 host_bandwidth_up "10 Mbit" host_bandwidth_down "100 Mbit" ]
  node [ id 1 host_bandwidth_up "10 Mbit" host_bandwidth_down "100 Mbit" ]
  node [ id 2 host_bandwidth_up "1 Mbit" host_bandwidth_down "10 Mbit" ]
  edge [ source 0 target 1 latency "10 ms" packet_loss 0.0 ]
  edge [ source 1 target 2 packet_loss 0.01 ]
]
