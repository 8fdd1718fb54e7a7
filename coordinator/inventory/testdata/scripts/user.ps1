Process { Write-Output "ok" }
