//go:build tools

// Package k8s only pins the Kubernetes commands that e2e/node/install.sh builds
// (go build -o … k8s.io/kubernetes/cmd/…); it holds no code of its own.
package k8s

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
