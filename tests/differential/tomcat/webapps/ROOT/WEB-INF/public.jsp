<%@ page contentType="text/plain" trimDirectiveWhitespaces="true" %>DIFF-PUBLIC tomcat path=<%= request.getServletPath() %><%= request.getPathInfo() == null ? "" : request.getPathInfo() %>
