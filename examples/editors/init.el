;; vLLM Ghost in Emacs with lsp-mode 10+: ghost text from your model when you pause typing,
;; C-<return> accepts it (M-x lsp-inline-completion-display asks at once).
(require 'lsp-mode)
(defvar vllm-ghost-command '("vllm-ghost" "lsp"))
(defvar vllm-ghost-settings ; as VS Code's vllmGhost.* settings, nested (README "Settings")
  ;; model.preset "auto" fits a model to the GPU; or (path . "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8")
  '((model . ((preset . "auto")))))

(lsp-register-client
 (make-lsp-client
  :new-connection (lsp-stdio-connection (lambda () vllm-ghost-command))
  :activation-fn (lambda (_file _mode) (derived-mode-p 'prog-mode))
  :add-on? t ; beside your language's own server
  :server-id 'vllm-ghost
  :initialization-options (lambda () vllm-ghost-settings)
  :notification-handlers
  (ht ("vllmGhost/status"
       (lambda (_workspace status)
         (when (equal (lsp-get status :state) "error")
           (lsp--error "vLLM Ghost: %s" (lsp-get status :message))))))))

(setq lsp-inline-completion-idle-delay 0.3)
(add-hook 'prog-mode-hook #'lsp-deferred)

(defun vllm-ghost-restart-model ()
  "Restart the model vLLM Ghost serves."
  (interactive)
  (let ((lsp-response-timeout 600))
    (lsp-workspace-command-execute "vllmGhost.restartModel")))
